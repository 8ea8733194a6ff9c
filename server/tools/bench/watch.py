"""WatchSessions under load: how late events arrive, exactly once or not, at what cost.

One real server process (`python -m server serve`, as the runner starts it). Streams are read
by CLIENTS client processes (this module with `--client`, one channel each), because one Python
process reading 1,000 streams would be the bottleneck; writers are plain asyncpg SQL in this
process, one change (a new session, or a message in the tenant's latest one) per transaction,
paced evenly. Latency runs from the writer's time right after COMMIT returned to the client's
time when the response arrived (`time.time()`, same machine). Every stream's events are
checked against its tenant's committed changes: none lost, none twice, each session's in
commit order. Cases: SPREAD (1,000 streams over 100 tenants, 200 changes/s) and HOT (200
streams on one tenant, 50 changes/s); the server's RSS before and with the SPREAD streams
open, idle; the CPU the server, the clients, PostgreSQL and the writers spent per delivered
event. A first server with every default shows how many of the SPREAD streams it takes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.config import Settings
from server.data import counters
from server.data.engine import asyncpg_dsn
from server.data.statements import Database
from server.runner import run_on_fastest_loop
from server.tools.bench import processes
from server.transport.tenancy import TENANT_METADATA_KEY

TENANT_PREFIX = "bench-watch-"
CLIENTS = 4
WRITER_CONNECTIONS = 10
SESSION_EVERY = 4  # a tenant's changes: a new session, then messages in it
IDLE_SECONDS = 3.0  # streams open and idle before the RSS and idle-CPU readings
SUBSCRIBE_TIMEOUT = 60.0
# After the last commit, clients wait for every event while events keep coming (late is not
# lost), until none came for STALL_SECONDS, or DRAIN_LIMIT passed; then SETTLE_SECONDS more
# for duplicates.
STALL_SECONDS = 5.0
DRAIN_LIMIT = 120.0
SETTLE_SECONDS = 1.0
DEFAULT_MAX_RPCS: int = Settings.model_fields["max_concurrent_rpcs"].default
_INSERT_SESSION = (
    "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, metadata, created_at, "
    "updated_at) VALUES ($1, $2, 'web', NULL, now(), now())"
)
_INSERT_MESSAGE = (
    "INSERT INTO chat_messages (tenant_id, session_id, role, content, metadata, created_at) "
    "VALUES ($1, $2, 'user', 'hello', NULL, now()) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class Case:
    """A load: streams spread evenly over tenants, changes per second spread evenly too."""

    name: str
    tenants: int
    streams_per_tenant: int
    changes_per_second: float
    p99_target_ms: float  # the targets
    p50_target_ms: float | None = None

    @property
    def streams(self) -> int:
        return self.tenants * self.streams_per_tenant


SPREAD = Case("spread", 100, 10, 200, p99_target_ms=150, p50_target_ms=25)
HOT = Case("hot tenant", 1, 200, 50, p99_target_ms=250)
KB_PER_STREAM_TARGET = 30


@dataclass(frozen=True, slots=True)
class Committed:
    """One writer transaction: its event's key (as `_key` makes it), session and commit time."""

    key: str
    session_id: str
    at: float


@dataclass(frozen=True, slots=True)
class Idle:
    """The server before its first stream and with a case's streams open, no change made."""

    rss_kb_without: int
    rss_kb_with: int
    cpu: float | None  # server CPU seconds per second with the streams open

    def kb_per_stream(self, streams: int) -> float:
        return (self.rss_kb_with - self.rss_kb_without) / streams if streams else math.nan


@dataclass(slots=True)
class CaseResult:
    """What one case delivered, checked against what the writers committed."""

    case: Case
    seconds: float  # of writing
    subscribed: int = 0  # streams (the others failed at once or took too long)
    idle: Idle | None = None  # for the first case the server serves
    committed: int = 0  # changes
    expected: int = 0  # deliveries: each stream, every change of its tenant
    delivered: int = 0  # of those, received (once counted)
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # events of no change the writers made
    out_of_order: int = 0  # events that came before an earlier change of their session
    stream_errors: dict[str, int] = field(default_factory=dict)  # by status code
    latencies_ms: list[float] = field(default_factory=list)  # sorted
    window_seconds: float = 0.0  # first commit to the last stream's last expected event
    cpu_s: dict[str, float] = field(default_factory=dict)  # within the window, by whose
    machine_busy: float = 0.0  # share of all CPUs busy within the window
    machine_busy_s: float = 0.0  # the same in CPU seconds

    def latency_ms(self, quantile: float) -> float:
        values = self.latencies_ms
        return values[min(len(values) - 1, int(quantile * len(values)))] if values else math.nan


@dataclass(slots=True)
class WatchResult:
    """Every case, and what a server with every default allowed."""

    clients: int
    max_concurrent_rpcs: int  # the measured server's (the default refuses SPREAD's streams)
    default_subscribed: int = 0  # of SPREAD's streams, on a server with every default
    default_refused: dict[str, int] = field(default_factory=dict)  # by status code
    cases: list[CaseResult] = field(default_factory=list)


def _key(response: pb.WatchSessionsResponse) -> str:
    """What identifies an event: the session it added, or the message."""
    if response.type == pb.WATCH_EVENT_TYPE_SESSION_ADDED:
        return "A" + response.session.session_id
    if response.type == pb.WATCH_EVENT_TYPE_MESSAGE_ADDED:
        return f"M{response.message.id}"
    return f"{pb.WatchEventType.Name(response.type)}:{response.session.session_id}"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


async def _postmaster(dsn: str) -> int | None:
    """The local PostgreSQL's postmaster process, or None when the database is not on this
    machine."""
    connection = await asyncpg.connect(dsn)
    try:
        # Read while the backend lives: its parent is the postmaster.
        return _postgres_parent(await connection.fetchval("SELECT pg_backend_pid()"))
    finally:
        await connection.close()


def _postgres_parent(pid: int) -> int | None:
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        is_postgres = Path(f"/proc/{parent}/comm").read_text().strip() == "postgres"
    except OSError:
        return None
    return parent if is_postgres else None


def _postgres_cpu_seconds(postmaster: int) -> float | None:
    """CPU time of PostgreSQL's live processes and, through the postmaster's children's
    times, of the backends that have exited (the writers' connections close meanwhile)."""
    live = processes.tree_cpu_seconds(postmaster)
    if live is None:
        return None
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    return live + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


class _Clients:
    """The client processes of one case: their streams subscribed, drained, then results."""

    def __init__(self, target: str, tenants: list[str], clients: int, workdir: Path) -> None:
        self._target = target
        self._tenants = tenants  # one per stream
        self._count = clients
        self._workdir = workdir
        self._processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> tuple[int, dict[str, int]]:
        """Start the clients; once each stream is subscribed or failed: (subscribed, failures
        by code)."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        for index in range(self._count):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.tools.bench.watch",
                "--client",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self._processes.append(process)
            spec = {
                "target": self._target,
                "tenants": self._tenants[index :: self._count],
                "results": str(self._workdir / f"client-{index}.json"),
            }
            await self._send(process, spec)
        subscribed, failed = 0, collections.Counter[str]()
        for process in self._processes:
            reply = await self._receive(process, SUBSCRIBE_TIMEOUT + 10)
            subscribed += reply["subscribed"]
            failed.update(reply["failed"])
        return subscribed, dict(failed)

    def cpu_seconds(self) -> float | None:
        times = [processes.tree_cpu_seconds(process.pid) for process in self._processes]
        return None if None in times else sum(seconds for seconds in times if seconds is not None)

    async def drain(self, expected: dict[str, int], *, stall: float, settle: float) -> None:
        """Return once every stream got `expected[tenant]` events, or none came for `stall`
        seconds; the clients then wait `settle` seconds more for duplicates."""
        for process in self._processes:
            await self._send(process, {"expected": expected, "stall": stall, "settle": settle})
        for process in self._processes:
            await self._receive(process, DRAIN_LIMIT + 10)

    async def results(self) -> list[tuple[str, list[tuple[str, float]], str | None]]:
        """Each stream's tenant, events (key, time received) and error, once the clients
        have exited."""
        streams = []
        for index, process in enumerate(self._processes):
            await self._receive(process, SETTLE_SECONDS + 30)
            await process.wait()
            path = self._workdir / f"client-{index}.json"
            for tenant, events, error in json.loads(path.read_text()):
                streams.append((tenant, [(key, at) for key, at in events], error))
            path.unlink()
        return streams

    async def stop(self) -> None:
        """End clients still running (the case failed on the way)."""
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    @staticmethod
    async def _send(process: asyncio.subprocess.Process, message: object) -> None:
        assert process.stdin is not None  # started with a pipe
        process.stdin.write(json.dumps(message).encode() + b"\n")
        await process.stdin.drain()

    @staticmethod
    async def _receive(process: asyncio.subprocess.Process, within: float) -> dict[str, Any]:
        assert process.stdout is not None  # started with a pipe
        async with asyncio.timeout(within):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"watch client {process.pid} exited with {await process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply


async def _write(
    dsn: str, tenants: list[str], rate: float, seconds: float, prefix: str
) -> dict[str, list[Committed]]:
    """`rate` changes per second for `seconds`, round robin over `tenants`. Each tenant's
    changes go through one connection, so a message's session has committed before it."""
    connections = [
        await asyncpg.connect(dsn) for _ in range(math.gcd(len(tenants), WRITER_CONNECTIONS))
    ]
    committed: dict[str, list[Committed]] = {tenant: [] for tenant in tenants}
    total = int(rate * seconds)
    start = time.monotonic()

    async def writer(offset: int, connection: asyncpg.Connection) -> None:
        for index in range(offset, total, len(connections)):
            await asyncio.sleep(start + index / rate - time.monotonic())
            tenant_index, number = index % len(tenants), index // len(tenants)
            tenant = tenants[tenant_index]
            session_id = f"{prefix}-{tenant_index}-{number // SESSION_EVERY}"
            if number % SESSION_EVERY == 0:
                await connection.execute(_INSERT_SESSION, tenant, session_id)
                key = "A" + session_id
            else:
                key = f"M{await connection.fetchval(_INSERT_MESSAGE, tenant, session_id)}"
            committed[tenant].append(Committed(key, session_id, time.time()))

    try:
        await asyncio.gather(
            *(writer(offset, connection) for offset, connection in enumerate(connections))
        )
    finally:
        for connection in connections:
            await connection.close()
    return committed


def _check(
    result: CaseResult,
    committed: dict[str, list[Committed]],
    streams: list[tuple[str, list[tuple[str, float]], str | None]],
) -> None:
    """Each stream's events against its tenant's commits: lost, twice, unexpected, out of
    order within a session, and the latency of each first delivery."""
    result.committed = sum(len(changes) for changes in committed.values())
    order = {
        tenant: {change.key: (index, change) for index, change in enumerate(changes)}
        for tenant, changes in committed.items()
    }
    errors = collections.Counter[str]()
    latencies = []
    for tenant, events, error in streams:
        if error is not None:
            errors[error] += 1
        expected = order[tenant]
        result.expected += len(expected)
        seen: set[str] = set()
        last_of_session: dict[str, int] = {}
        for key, received_at in events:
            found = expected.get(key)
            if found is None:
                result.unexpected += 1
                continue
            if key in seen:
                result.duplicated += 1
                continue
            seen.add(key)
            index, change = found
            if index < last_of_session.get(change.session_id, -1):
                result.out_of_order += 1
            last_of_session[change.session_id] = index
            latencies.append((received_at - change.at) * 1000)
        result.delivered += len(seen)
        result.lost += len(expected) - len(seen)
    result.stream_errors = dict(errors)
    result.latencies_ms = sorted(latencies)


def _cpu_readings(
    server: processes.ServerProcess, clients: _Clients, postmaster: int | None
) -> dict[str, float | None]:
    """CPU seconds so far of the server, the clients, PostgreSQL and this process (the
    writers; None: cannot tell)."""
    return {
        "server": server.cpu_seconds(),
        "clients": clients.cpu_seconds(),
        "PostgreSQL": None if postmaster is None else _postgres_cpu_seconds(postmaster),
        "writers": time.process_time(),
    }


async def _run_case(
    case: Case,
    server: processes.ServerProcess,
    dsn: str,
    *,
    seconds: float,
    clients: int,
    workdir: Path,
    idle: bool,
    postmaster: int | None,
) -> CaseResult:
    """One case on a running server, with the idle readings first when `idle`."""
    prefix = uuid.uuid4().hex[:8]
    tenants = [f"{TENANT_PREFIX}{prefix}-{index:03d}" for index in range(case.tenants)]
    result = CaseResult(case, seconds)
    group = _Clients(
        server.target,
        [tenant for _ in range(case.streams_per_tenant) for tenant in tenants],
        clients,
        workdir,
    )
    try:
        rss_kb_without = _rss_kb(server.pid)
        # Streams that failed show in the check: their tenants' changes count as lost.
        result.subscribed, _ = await group.start()
        if idle:
            before, began = server.cpu_seconds(), time.monotonic()
            await asyncio.sleep(IDLE_SECONDS)
            after = server.cpu_seconds()
            result.idle = Idle(
                rss_kb_without,
                _rss_kb(server.pid),
                None
                if before is None or after is None
                else (after - before) / (time.monotonic() - began),
            )
        cpu_before = _cpu_readings(server, group, postmaster)
        busy_before, total_before = _machine_ticks()
        began = time.monotonic()
        committed = await _write(dsn, tenants, case.changes_per_second, seconds, prefix)
        await group.drain(
            {tenant: len(changes) for tenant, changes in committed.items()},
            stall=STALL_SECONDS,
            settle=SETTLE_SECONDS,
        )
        result.window_seconds = time.monotonic() - began
        cpu_after = _cpu_readings(server, group, postmaster)
        busy_after, total_after = _machine_ticks()
        for whose, before in cpu_before.items():
            after = cpu_after[whose]
            if before is not None and after is not None:
                result.cpu_s[whose] = after - before
        tick = os.sysconf("SC_CLK_TCK")
        result.machine_busy_s = (busy_after - busy_before) / tick
        result.machine_busy = (busy_after - busy_before) / (total_after - total_before)
        _check(result, committed, await group.results())
    finally:
        await group.stop()
    return result


async def _default_limit(
    database_url: str, clients: int, workdir: Path
) -> tuple[int, dict[str, int]]:
    """As many streams as SPREAD opens, on a server with every default: (subscribed, refused
    by code)."""
    async with processes.service_server(
        database_url, workers=None, log=workdir / "watch-default-server.log"
    ) as server:
        group = _Clients(
            server.target, [TENANT_PREFIX + "default"] * SPREAD.streams, clients, workdir
        )
        try:
            subscribed, refused = await group.start()
            await group.drain({}, stall=0, settle=0)
            await group.results()
        finally:
            await group.stop()
    return subscribed, refused


async def measure(
    database_url: str, *, workdir: Path, seconds: float, clients: int = CLIENTS
) -> WatchResult:
    """The whole watch section; leaves no row of its tenants behind and their counters
    exact."""
    dsn = asyncpg_dsn(database_url)
    # Streams hold a concurrent-RPC slot for their whole life, like unary calls: the measured
    # server gets room for every stream and the default's room for other calls besides.
    max_rpcs = SPREAD.streams + DEFAULT_MAX_RPCS
    watch = WatchResult(clients, max_rpcs)
    postmaster = await _postmaster(dsn)
    watch.default_subscribed, watch.default_refused = await _default_limit(
        database_url, clients, workdir
    )
    try:
        async with processes.service_server(
            database_url,
            workers=None,
            log=workdir / "watch-server.log",
            settings={"MAX_CONCURRENT_RPCS": str(max_rpcs)},
        ) as server:
            for case in (SPREAD, HOT):
                watch.cases.append(
                    await _run_case(
                        case,
                        server,
                        dsn,
                        seconds=seconds,
                        clients=clients,
                        workdir=workdir,
                        idle=case is SPREAD,
                        postmaster=postmaster,
                    )
                )
    finally:
        admin = await asyncpg.connect(dsn)
        folder = Database(database_url, pool_size=1, pool_timeout=30, connect_timeout=10)
        await folder.open()
        try:
            await admin.execute(
                "DELETE FROM chat_sessions WHERE tenant_id LIKE $1", TENANT_PREFIX + "%"
            )
            await counters.fold(folder)
        finally:
            await folder.close()
            await admin.close()
    return watch


# The client processes: one channel to the server, many streams on it.


def _reply(message: object) -> None:
    print(json.dumps(message), flush=True)


async def _read_line() -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.to_thread(sys.stdin.readline))
    return message


async def _client(target: str, tenants: list[str]) -> list[list[object]]:
    """Open a stream per tenant, answer _Clients as it asks; each stream's tenant, events and
    error once they are closed."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        streams = [_ClientStream(stub, tenant) for tenant in tenants]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.gather(*(stream.subscribed.wait() for stream in streams))
        failed = collections.Counter(
            stream.error or "NOT_SUBSCRIBED" for stream in streams if not stream.is_subscribed
        )
        _reply({"subscribed": len(streams) - sum(failed.values()), "failed": failed})
        drain = await _read_line()
        expected = drain["expected"]
        assert isinstance(expected, dict)
        for stream in streams:
            stream.expect(int(expected.get(stream.tenant, 0)))
        complete = asyncio.ensure_future(
            asyncio.gather(*(stream.complete.wait() for stream in streams))
        )
        received, deadline = -1, time.monotonic() + DRAIN_LIMIT
        while not complete.done() and time.monotonic() < deadline:
            now = sum(len(stream.events) for stream in streams)
            if now == received:
                break
            received = now
            await asyncio.wait({complete}, timeout=float(drain["stall"]))
        complete.cancel()
        _reply({"drained": True})
        await asyncio.sleep(float(drain["settle"]))
        for stream in streams:
            await stream.close()
    return [[stream.tenant, stream.events, stream.error] for stream in streams]


def _client_main() -> None:
    """`--client`: a spec line on stdin (target, a tenant per stream, the results file); the
    results file written before the last answer."""
    spec = json.loads(sys.stdin.readline())
    streams = run_on_fastest_loop(_client(spec["target"], spec["tenants"]))
    Path(spec["results"]).write_text(json.dumps(streams))
    _reply({"done": True})


class _ClientStream:
    """One WatchSessions stream, read in the background: every event but bookmarks, with the
    time it arrived."""

    def __init__(self, stub: pb_grpc.SessionMonitoringStub, tenant: str) -> None:
        self.tenant = tenant
        self.events: list[tuple[str, float]] = []
        self.error: str | None = None
        self.is_subscribed = False
        self.subscribed = asyncio.Event()  # set at the first bookmark, or when the call fails
        self.complete = asyncio.Event()  # set once `expect`'s count arrived, or the call failed
        self._expected: int | None = None
        self._call = stub.WatchSessions(
            pb.WatchSessionsRequest(), metadata=((TENANT_METADATA_KEY, tenant),)
        )
        self._task = asyncio.create_task(self._read())

    def expect(self, count: int) -> None:
        self._expected = count
        if len(self.events) >= count:
            self.complete.set()

    async def _read(self) -> None:
        try:
            async for response in self._call:
                received_at = time.time()
                if response.type == pb.WATCH_EVENT_TYPE_BOOKMARK:
                    self.is_subscribed = True
                    self.subscribed.set()
                    continue
                self.events.append((_key(response), received_at))
                if self._expected is not None and len(self.events) >= self._expected:
                    self.complete.set()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error.code().name
        finally:
            self.subscribed.set()
            self.complete.set()

    async def close(self) -> None:
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def main() -> None:
    """`python -m server.tools.bench.watch DATABASE_URL`: this section alone, printed (`make
    bench` puts it in BENCHMARKS.md)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", nargs="?", help="a migrated database (SQLAlchemy URL)")
    parser.add_argument("--seconds", type=float, default=20.0, help="of writing, per case")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="client processes")
    parser.add_argument("--workdir", type=Path, default=Path(".data") / "bench" / "run")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client_main()
        return
    if args.database_url is None:
        parser.error("DATABASE_URL is required")
    result = run_on_fastest_loop(
        measure(args.database_url, workdir=args.workdir, seconds=args.seconds, clients=args.clients)
    )
    for line in summary(result):
        print(line)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cost(case: CaseResult) -> str:
    if not case.delivered:
        return "-"
    # What none of those accounts for: the kernel's work outside them (loopback networking),
    # and any other process on the machine (a busy neighbour shows here).
    other = case.machine_busy_s - sum(case.cpu_s.values())
    return ", ".join(
        f"{whose} {cpu_s / case.delivered * 1e6:,.0f} µs ({cpu_s:.1f} s)"
        for whose, cpu_s in (*case.cpu_s.items(), ("other", other))
    )


def summary(result: WatchResult) -> list[str]:
    """One line per measurement, with the issue's target beside each figure."""
    refused = ", ".join(
        f"{count:,} {code}" for code, count in sorted(result.default_refused.items())
    )
    lines = [
        f"every default (MAX_CONCURRENT_RPCS {DEFAULT_MAX_RPCS}): {result.default_subscribed:,} "
        f"of {SPREAD.streams:,} streams subscribed"
        + (f", refused: {refused}" if refused else "")
        + f"; measured below with MAX_CONCURRENT_RPCS={result.max_concurrent_rpcs:,}",
    ]
    for case in result.cases:
        load = case.case
        p50_target = f" (target ≤ {load.p50_target_ms:g})" if load.p50_target_ms else ""
        lines.append(
            f"{load.name}: {load.streams:,} streams over {load.tenants} tenant(s)"
            + (f" ({case.subscribed:,} subscribed)" if case.subscribed < load.streams else "")
            + f", {load.changes_per_second:g} changes/s for {case.seconds:g} s, "
            f"{case.committed:,} changes, {case.expected:,} deliveries: latency p50 "
            f"{_ms(case.latency_ms(0.5))} ms{p50_target}, p99 {_ms(case.latency_ms(0.99))} ms "
            f"(target ≤ {load.p99_target_ms:g}), max {_ms(case.latency_ms(1.0))} ms; lost "
            f"{case.lost:,} (missing after {STALL_SECONDS:g} s without any event), duplicated "
            f"{case.duplicated:,}, out of order {case.out_of_order:,}, unexpected "
            f"{case.unexpected:,} (target: none of these)"
            + (f"; streams failed: {case.stream_errors}" if case.stream_errors else "")
        )
        lines.append(
            f"{load.name} cost: {case.window_seconds:.1f} s from the first commit until every "
            f"stream had every event ({case.delivered / case.window_seconds:,.0f} deliveries/s); "
            f"CPU per delivery: {_cost(case)}; all {os.cpu_count()} CPUs "
            f"{case.machine_busy:.0%} busy"
        )
        if case.idle is not None:
            idle = case.idle
            lines.append(
                f"memory: server RSS {idle.rss_kb_without / 1024:,.1f} MiB before any stream, "
                f"{idle.rss_kb_with / 1024:,.1f} MiB with {case.subscribed:,} idle ones: "
                f"{idle.kb_per_stream(case.subscribed):.1f} KB per stream (target ≤ "
                f"{KB_PER_STREAM_TARGET} KB)"
                + ("" if idle.cpu is None else f"; they cost the server {idle.cpu:.1%} of a CPU")
            )
    return lines


if __name__ == "__main__":
    main()
