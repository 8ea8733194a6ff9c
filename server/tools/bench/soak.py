"""`make soak`: a bounded mixed load against a real server process on loopback.

Runs for SOAK_SECONDS (default 300) at SOAK_CONCURRENCY calls in flight (default 16): lists with
filters and page tokens, details, status updates, and a share of calls that must fail (no tenant,
bad page size, unknown session). Reports calls, codes (expected and unexpected), p50/p99 and the
server's resident memory after warm-up and at the end. Exits 1 when a call returned a code it
should not have, or memory grew 10% or more after warm-up.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.tools.bench import dataset
from server.tools.bench.h2load import percentile
from server.tools.bench.processes import free_port, wait_serving
from server.tools.datagen import DatasetSpec

SOAK_SPEC = DatasetSpec(
    sessions=20_000,
    messages_per_session=10,
    small_tenants=5,
    small_tenant_sessions=100,
    huge_sessions=1,
    huge_session_messages=5_000,
    tenant_prefix="soak",
)
SOAK_DATABASE = "soak"
MAX_MEMORY_GROWTH = 0.10
_STATUSES = (pb.SESSION_STATUS_ACTIVE, pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_EXPIRED)


@dataclass
class Tally:
    """What the load saw."""

    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _one_call(
    stub: pb_grpc.SessionMonitoringStub, rng: random.Random, tenant: str, tally: Tally
) -> None:
    metadata = [("x-tenant-id", tenant)]
    roll = rng.random()
    expected = grpc.StatusCode.OK
    call: object
    if roll < 0.35:
        call = stub.ListSessions(
            pb.ListSessionsRequest(page=rng.randint(1, 200), page_size=rng.choice((10, 20, 50))),
            metadata=metadata,
        )
    elif roll < 0.5:
        call = stub.ListSessions(
            pb.ListSessionsRequest(status=rng.choice(_STATUSES), page_size=20), metadata=metadata
        )
    elif roll < 0.75:
        session_id = f"s-{rng.randrange(SOAK_SPEC.sessions):07d}"
        call = stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id=session_id), metadata=metadata
        )
    elif roll < 0.9:
        session_id = f"s-{rng.randrange(SOAK_SPEC.sessions):07d}"
        call = stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id=session_id, status=rng.choice(_STATUSES)),
            metadata=metadata,
        )
    elif roll < 0.93:
        expected = grpc.StatusCode.UNAUTHENTICATED
        call = stub.ListSessions(pb.ListSessionsRequest())
    elif roll < 0.96:
        expected = grpc.StatusCode.INVALID_ARGUMENT
        call = stub.ListSessions(pb.ListSessionsRequest(page_size=500), metadata=metadata)
    else:
        expected = grpc.StatusCode.NOT_FOUND
        call = stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="no-such-session"), metadata=metadata
        )
    started = time.perf_counter()
    try:
        await call  # type: ignore[misc]
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        code = error.code()
    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    tally.calls += 1
    tally.codes[code.name] += 1
    if code != expected:
        tally.unexpected[f"{code.name} (wanted {expected.name})"] += 1


async def _drive(target: str, seconds: float, concurrency: int, tally: Tally) -> None:
    tenant = SOAK_SPEC.big_tenant
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                await _one_call(stub, rng, tenant, tally)

        await asyncio.gather(*(worker(seed) for seed in range(concurrency)))


async def soak(seconds: float, concurrency: int, database_url: str) -> int:
    """Run the soak; returns the process exit code."""
    await dataset.ensure(database_url, [SOAK_SPEC])
    target = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--address", target, env=env
    )
    try:
        await wait_serving(target, process)
        warm_up = min(30.0, seconds / 10)
        await _drive(target, warm_up, concurrency, Tally())
        rss_start = _rss_kib(process.pid)
        tally = Tally()
        started = time.monotonic()
        await _drive(target, seconds, concurrency, tally)
        elapsed = time.monotonic() - started
        rss_end = _rss_kib(process.pid)
    finally:
        process.terminate()
        await process.wait()
    growth = (rss_end - rss_start) / rss_start
    latencies = sorted(tally.latencies_ms)
    print(
        f"soak: {seconds:.0f}s at concurrency {concurrency} after {warm_up:.0f}s warm-up\n"
        f"calls: {tally.calls:,} ({tally.calls / elapsed:,.0f}/s)\n"
        f"codes: {', '.join(f'{code} {n:,}' for code, n in tally.codes.most_common())}\n"
        f"unexpected: {dict(tally.unexpected) or 'none'}\n"
        f"latency: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms\n"
        f"server memory (RSS): {rss_start / 1024:.1f} MiB after warm-up, "
        f"{rss_end / 1024:.1f} MiB at the end ({growth:+.1%})"
    )
    return 1 if tally.unexpected or growth >= MAX_MEMORY_GROWTH else 0


def main() -> int:
    """`python -m server.tools.bench.soak`: settings from SOAK_SECONDS, SOAK_CONCURRENCY and
    SOAK_DATABASE_URL (default: a database on the benchmark's embedded PostgreSQL)."""
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "16"))
    url = os.environ.get("SOAK_DATABASE_URL") or dataset.database_url(
        None, quick=False, name=SOAK_DATABASE
    )
    dataset.migrate(url)
    return asyncio.run(soak(seconds, concurrency, url))


if __name__ == "__main__":
    sys.exit(main())
