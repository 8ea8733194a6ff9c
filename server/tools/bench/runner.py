"""The benchmark run: dataset, servers, every scenario at every concurrency, the two limits."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.data.statements import ObservedDatabase
from server.runner import run_on_fastest_loop
from server.tools.bench import (
    dataset,
    floor_server,
    h2load,
    processes,
    scenarios,
    sqlreplay,
    watch,
    writers,
)
from server.tools.bench.empty_server import PATH as EMPTY_PATH
from server.tools.bench.scenarios import Scenario
from server.transport.servicer import SessionMonitoringService
from server.transport.tenancy import TENANT_METADATA_KEY, bind_tenant, unbind_tenant
from server.transport.validation import MAX_MESSAGE_PAGE_SIZE
from server.transport.watch_feed import ChangeFeed
from server.transport.watch_stream import Watcher, WatchSettings


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    concurrency: tuple[int, ...]
    duration: float
    warmup: float
    workers: int | None
    scenarios: frozenset[str] | None  # None: every scenario
    skip_generate: bool
    comparison: bool
    database_url: str | None
    output: Path
    workdir: Path


@dataclass(frozen=True, slots=True)
class Cell:
    """One scenario at one concurrency: the service, its floor and its raw-SQL limit."""

    concurrency: int
    service: h2load.LoadResult
    floor: h2load.LoadResult
    sql: sqlreplay.ReplayResult
    bad_replies: int  # calls whose reply was not the expected bytes (errors carry none)
    server_cpu_us: float | None  # server CPU (all workers and threads) per completed call
    floor_cpu_us: float | None


@dataclass(slots=True)
class ScenarioRun:
    scenario: Scenario
    sql: sqlreplay.CapturedCall
    reply: bytes  # the service's serialized reply, which the floor returns as it is
    reply_bytes: int = 0
    checks: list[str] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


@dataclass(slots=True)
class Results:
    options: Options
    database_url: str
    facts: dataset.Facts
    runs: list[ScenarioRun]
    empty: dict[int, h2load.LoadResult]
    empty_cpu_us: dict[int, float | None] = field(default_factory=dict)  # per call, by c
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # wrong answers to the client checks
    walk: SessionWalk | None = None  # every message of the huge session, when it was read
    # Page-1 p50s (ms) of the large and the small comparison tenant, per concurrency, from
    # rounds that alternate between the two.
    sizes: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    server_log: dict[str, int] = field(default_factory=dict)  # warning/error line -> count
    writers: writers.WritersResult | None = None  # what our triggers cost other writers
    watch: watch.WatchResult | None = None  # WatchSessions latency, exactness and cost


class CheckError(RuntimeError):
    """A scenario's reply was not what the dataset says it must be."""


@dataclass(frozen=True, slots=True)
class SessionWalk:
    """The huge session read from its first message to its last by next_page_token."""

    session_id: str
    messages: int
    pages: int
    page_size: int
    largest_reply_bytes: int
    seconds: float


SIZE_ROUNDS = 3


async def _compare_tenant_sizes(
    options: Options, server: processes.ServerProcess, results: Results
) -> None:
    """Page 1 of the large and the small comparison tenant, alternated for SIZE_ROUNDS rounds
    at each concurrency: this machine's latency drifts within seconds, and cells measured minutes
    apart would compare the drift rather than the tenants."""
    facts = results.facts
    if facts.million is None or facts.ten_thousand is None:
        return
    by_tenant = {run.scenario.tenant: run.scenario for run in results.runs}
    large_scenario = by_tenant.get(facts.million.tenant_id)
    small_scenario = by_tenant.get(facts.ten_thousand.tenant_id)
    if large_scenario is None or small_scenario is None:
        return
    pair = (large_scenario, small_scenario)
    bodies = [h2load.grpc_frame(scenario.request.SerializeToString()) for scenario in pair]
    for concurrency in options.concurrency:
        large: list[float] = []
        small: list[float] = []
        for _ in range(SIZE_ROUNDS):
            for scenario, body, p50s in zip(pair, bodies, (large, small), strict=True):
                result, _ = await _load(
                    options, server.target, scenario.path, body, scenario.tenant, concurrency
                )
                p50s.append(result.p50_ms)
        results.sizes[concurrency] = (large, small)
        _line(
            f"  tenant size          c={concurrency:<3} page 1 p50 large "
            f"{statistics.median(large):.2f} ms, small {statistics.median(small):.2f} ms"
        )


async def _walk_session(stub: pb_grpc.SessionMonitoringStub, facts: dataset.Facts) -> SessionWalk:
    """Page through every message of the huge session with the largest page size; each message
    must come once, in order, and the count must be the session's."""
    began = time.monotonic()
    token, seen, pages, largest = "", 0, 0, 0
    last: tuple[int, int, int] | None = None
    while True:
        reply: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(
                session_id=facts.huge_session, page_size=MAX_MESSAGE_PAGE_SIZE, page_token=token
            ),
            metadata=((TENANT_METADATA_KEY, facts.big.tenant_id),),
            timeout=30,
        )
        pages += 1
        largest = max(largest, reply.ByteSize())
        for message in reply.messages:
            key = (message.create_time.seconds, message.create_time.nanos, message.id)
            if last is not None and key <= last:
                raise CheckError(f"{facts.huge_session}: message {message.id} out of order")
            last = key
        seen += len(reply.messages)
        token = reply.next_page_token
        if not token:
            break
        if pages > facts.huge_messages:
            raise CheckError(f"{facts.huge_session}: next_page_token never ran out")
    if seen != facts.huge_messages:
        raise CheckError(
            f"{facts.huge_session}: {seen} messages paged, expected {facts.huge_messages}"
        )
    return SessionWalk(
        facts.huge_session, seen, pages, MAX_MESSAGE_PAGE_SIZE, largest, time.monotonic() - began
    )


def bad_replies(result: h2load.LoadResult, reply_bytes: int) -> int:
    """How many completed calls cannot have carried the expected reply, from h2load's byte count.

    h2load counts HTTP statuses only, and a gRPC error is HTTP 200 with grpc-status in the
    trailers and no message, so a shortfall in DATA bytes is what reveals failed calls. Bytes
    of calls cut off at the end of the run can only add, never hide, a shortfall.
    """
    missing = reply_bytes * result.done - result.data_bytes
    return result.failed + (math.ceil(missing / reply_bytes) if missing > 0 else 0)


async def _check(stub: pb_grpc.SessionMonitoringStub, run: ScenarioRun, when: str) -> None:
    scenario = run.scenario
    try:
        reply = await scenarios.call(stub, scenario)
    except grpc.aio.AioRpcError as error:
        run.checks.append(f"{when}: {error.code().name} {error.details()}")
        raise CheckError(
            f"{scenario.key} ({when}): {error.code().name}: {error.details()}"
        ) from None
    got = scenarios.rows(reply)
    size = len(h2load.grpc_frame(reply.SerializeToString()))
    run.checks.append(f"{when}: OK, {got} rows, {size} bytes")
    if got != scenario.expected_rows:
        raise CheckError(f"{scenario.key} ({when}): {got} rows, expected {scenario.expected_rows}")
    if run.reply_bytes and size != run.reply_bytes:
        raise CheckError(f"{scenario.key} ({when}): reply of {size} bytes, was {run.reply_bytes}")
    run.reply_bytes = size


async def _capture(url: str, items: list[Scenario]) -> list[ScenarioRun]:
    """Each scenario's SQL, recorded from one in-process call (after one to warm the pool)."""
    database = ObservedDatabase(url, pool_size=1, pool_timeout=10, connect_timeout=10)
    await database.open()
    capture = sqlreplay.Capture(database)
    # The captured scenarios never watch: a feed that never starts is enough.
    feed = ChangeFeed(database, None, poll_interval=1.0)
    watcher = Watcher(
        feed,
        database,
        WatchSettings(buffer=1, bookmark_interval=1, max_age=1, initial_idle_timeout=1),
    )
    service = SessionMonitoringService(database, watcher=watcher)
    runs: list[ScenarioRun] = []
    try:
        for scenario in items:
            token = bind_tenant(scenario.tenant)
            try:
                reply = await scenarios.call_in_process(service, scenario)
                captured = await capture.record(
                    lambda s=scenario: scenarios.call_in_process(service, s)  # type: ignore[misc]
                )
            finally:
                unbind_tenant(token)
            runs.append(ScenarioRun(scenario, captured, reply.SerializeToString()))
    finally:
        await database.close()
    return runs


async def _deep_page_token(stub: pb_grpc.SessionMonitoringStub, facts: dataset.Facts) -> str:
    page = scenarios.deep_page(facts) - 1
    reply: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=scenarios.PAGE_SIZE, page=page),
        metadata=((TENANT_METADATA_KEY, facts.big.tenant_id),),
        timeout=30,
    )
    if not reply.next_page_token:
        raise CheckError(f"page {page} of {facts.big.tenant_id} has no next_page_token")
    return reply.next_page_token


async def _load(
    options: Options,
    target: str,
    path: str,
    body: bytes,
    tenant: str,
    concurrency: int,
    cpu_seconds: Callable[[], float | None] = lambda: None,
) -> tuple[h2load.LoadResult, float | None]:
    """h2load after a warm-up, and the CPU µs per completed call that `cpu_seconds` (a running
    total) says were spent meanwhile (None when it cannot tell)."""
    common = {
        "url": f"http://{target}{path}",
        "body": body,
        "headers": {TENANT_METADATA_KEY: tenant},
        "concurrency": concurrency,
        "workdir": options.workdir / "h2load",
    }
    await h2load.run(**common, duration=options.warmup)  # type: ignore[arg-type]
    before = cpu_seconds()
    result = await h2load.run(**common, duration=options.duration)  # type: ignore[arg-type]
    after = cpu_seconds()
    if before is None or after is None or not result.done:
        return result, None
    return result, (after - before) / result.done * 1e6


def _cpu_text(cpu_us: float | None) -> str:
    return "" if cpu_us is None else f" cpu {cpu_us:5.0f} us/call"


def _line(text: str) -> None:
    print(text, flush=True)


async def run(options: Options, database_url: str) -> Results:
    """Everything after the database exists and is migrated."""
    began = time.monotonic()
    big_spec = dataset.QUICK_SPEC if options.quick else dataset.FULL_SPEC
    if not options.skip_generate:
        specs = [big_spec]
        if options.comparison:
            specs += dataset.comparison_specs(options.quick)
        _line("dataset: generating what is missing (existing tenants are reused)")
        await dataset.ensure(database_url, specs)
    facts = await dataset.read_facts(database_url, big_spec, comparison=options.comparison)
    _line(
        f"dataset: {facts.total_sessions:,} sessions, ~{facts.total_messages:,} messages; "
        f"big tenant {facts.big.sessions:,} sessions"
    )
    results = Results(options, database_url, facts, [], {})
    async with (
        processes.service_server(
            database_url, workers=options.workers, log=options.workdir / "server.log"
        ) as server,
        processes.bare_server("server.tools.bench.empty_server") as empty_server,
        grpc.aio.insecure_channel(server.target) as channel,
    ):
        stub = pb_grpc.SessionMonitoringStub(channel)
        token = await _deep_page_token(stub, facts)
        items = scenarios.build(facts, token)
        if options.scenarios is not None:
            unknown = options.scenarios - {item.key for item in items}
            if unknown:
                raise CheckError(f"no such scenario: {', '.join(sorted(unknown))}")
            items = [item for item in items if item.key in options.scenarios]
        _line(f"capturing the SQL of {len(items)} scenarios")
        results.runs = await _capture(database_url, items)
        spec = options.workdir / "floor.pickle"
        floor_server.write_spec(
            spec,
            {
                run.scenario.key: floor_server.FloorCall(run.sql.statements, run.reply)
                for run in results.runs
            },
        )
        pool = await sqlreplay.open_pool(database_url, max(options.concurrency))
        try:
            async with processes.bare_server(
                "server.tools.bench.floor_server",
                "--database-url",
                database_url,
                "--spec",
                str(spec),
            ) as floor:
                for scenario_run in results.runs:
                    await _run_scenario(options, server, floor, stub, pool, scenario_run, results)
        finally:
            await pool.close()
        await _compare_tenant_sizes(options, server, results)
        try:
            results.walk = await _walk_session(stub, facts)
            _line(
                f"  paged all {results.walk.messages:,} messages of {results.walk.session_id} "
                f"in {results.walk.pages} pages, {results.walk.seconds:.1f} s"
            )
        except CheckError as error:
            results.failures.append(str(error))
            _line(f"  {error}")
        empty_body = h2load.grpc_frame(b"")
        for concurrency in options.concurrency:
            result, cpu = await _load(
                options,
                empty_server.target,
                EMPTY_PATH,
                empty_body,
                facts.big.tenant_id,
                concurrency,
                empty_server.cpu_seconds,
            )
            results.empty[concurrency] = result
            results.empty_cpu_us[concurrency] = cpu
            _line(
                f"  empty RPC            c={concurrency:<3} {result.calls_per_second:9.0f}/s"
                + _cpu_text(cpu)
            )
    results.server_log = server_log_problems(options.workdir / "server.log")
    _line("writers' tax: our triggers enabled and disabled, alternating")
    results.writers = await writers.measure(
        database_url, rounds=1 if options.quick else 5, seconds=1.0 if options.quick else 3.0
    )
    for line in writers.summary(results.writers):
        _line(f"  {line}")
    _line("watch: WatchSessions streams on a server of their own, changes from plain SQL")
    results.watch = await watch.measure(
        database_url, workdir=options.workdir, seconds=3.0 if options.quick else 20.0
    )
    for line in watch.summary(results.watch):
        _line(f"  {line}")
    results.seconds = time.monotonic() - began
    return results


_REQUEST_ID = re.compile(r"\[[0-9a-f]{32}\] ")


def server_log_problems(log: Path) -> dict[str, int]:
    """The server's WARNING and ERROR lines, without timestamps and request ids, counted."""
    counts: dict[str, int] = {}
    if not log.exists():
        return counts
    for line in log.read_text(errors="replace").splitlines():
        for level in (" WARNING ", " ERROR ", " CRITICAL "):
            if level in line:
                message = _REQUEST_ID.sub("", level.strip() + " " + line.split(level, 1)[1])
                counts[message] = counts.get(message, 0) + 1
                break
    return counts


async def _run_scenario(
    options: Options,
    server: processes.ServerProcess,
    floor: processes.ServerProcess,
    stub: pb_grpc.SessionMonitoringStub,
    pool: asyncpg.Pool,
    scenario_run: ScenarioRun,
    results: Results,
) -> None:
    scenario = scenario_run.scenario
    try:
        await _check(stub, scenario_run, "before")
    except CheckError as error:
        results.failures.append(str(error))
        _line(f"  {scenario.key}: {error}; skipped")
        return
    body = h2load.grpc_frame(scenario.request.SerializeToString())
    for concurrency in options.concurrency:
        service, cpu = await _load(
            options,
            server.target,
            scenario.path,
            body,
            scenario.tenant,
            concurrency,
            server.cpu_seconds,
        )
        floor_result, floor_cpu = await _load(
            options,
            floor.target,
            floor_server.path(scenario.key),
            body,
            scenario.tenant,
            concurrency,
            floor.cpu_seconds,
        )
        sql = await sqlreplay.replay(
            pool,
            scenario_run.sql,
            concurrency=concurrency,
            duration=options.duration,
            warmup=options.warmup,
        )
        bad = bad_replies(service, scenario_run.reply_bytes)
        floor_bad = bad_replies(floor_result, scenario_run.reply_bytes)
        if floor_bad:
            # The floor returns fixed bytes, so a shortfall is a failed statement: its figure
            # would not be a floor.
            results.failures.append(
                f"{scenario.key} c={concurrency}: {floor_bad} floor calls failed"
            )
        scenario_run.cells.append(
            Cell(concurrency, service, floor_result, sql, bad, cpu, floor_cpu)
        )
        _line(
            f"  {scenario.key:<20} c={concurrency:<3} {service.calls_per_second:9.0f}/s "
            f"p50 {service.p50_ms:7.2f} ms p99 {service.p99_ms:7.2f} ms"
            + _cpu_text(cpu)
            + f" | floor {floor_result.calls_per_second:7.0f}/s"
            + _cpu_text(floor_cpu)
            + f" | raw SQL {sql.calls_per_second:7.0f}/s"
            + (f" | {bad} calls without the expected reply" if bad else "")
        )
    try:
        await _check(stub, scenario_run, "after")
    except CheckError as error:
        results.failures.append(str(error))
        _line(f"  {scenario.key}: {error}")


def run_blocking(options: Options) -> Results:
    """Resolve and migrate the database (blocking steps), then run the benchmark."""
    url = dataset.database_url(options.database_url, quick=options.quick)
    _line("database: migrating to head")
    dataset.migrate(url)
    # The loop the service itself runs on, so the raw-SQL replay is as fast as the service's
    # own statements could go.
    return run_on_fastest_loop(run(options, url))
