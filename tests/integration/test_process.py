"""`python -m server` as operators run it: it serves, reports health, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import Factory, tenant_metadata

SERVING_LINE = re.compile(rb"serving sessionmonitoring\.v1\.SessionMonitoring on [\d.]+:(\d+)")


@dataclass
class RunningServer:
    """A server process and the port it announced."""

    process: asyncio.subprocess.Process
    port: int
    log: bytearray


async def _start(
    database_url: str, *args: str, address: str = "127.0.0.1:0", servers: int = 1
) -> RunningServer:
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": address}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    log = bytearray()
    async with asyncio.timeout(60):
        while len(ports := SERVING_LINE.findall(log)) < servers:
            line = await process.stdout.readline()
            assert line, f"server exited before serving: {log.decode(errors='replace')}"
            log += line
    return RunningServer(process, int(ports[0]), log)


async def _finish(server: RunningServer) -> int:
    assert server.process.stdout is not None
    async with asyncio.timeout(30):
        server.log += await server.process.stdout.read()
        return await server.process.wait()


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[RunningServer]:
    server = await _start(database_url, "serve", "--grace-period", "10")
    yield server
    if server.process.returncode is None:
        server.process.kill()
        await server.process.wait()


async def test_the_process_reports_serving_health_for_the_service(served: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sessionmonitoring.v1.SessionMonitoring"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_lets_an_in_flight_call_finish_then_exits_zero(
    served: RunningServer, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "held")
    async with engine.connect() as blocker:
        # Hold the row lock so the update is still in flight when SIGTERM arrives.
        await blocker.execute(
            text("SELECT 1 FROM chat_sessions WHERE tenant_id = :t FOR UPDATE"), {"t": tenant}
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = pb_grpc.SessionMonitoringStub(channel)
            call = asyncio.ensure_future(
                stub.UpdateSessionStatus(
                    pb.UpdateSessionStatusRequest(
                        session_id="held", status=pb.SESSION_STATUS_CLOSED
                    ),
                    metadata=tenant_metadata(tenant),
                )
            )
            await _wait_for_lock_waiter(engine, tenant)
            served.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert not call.done()
            # Draining: a new call on a new connection is refused while the old one finishes.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as fresh:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await health_pb2_grpc.HealthStub(fresh).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            await blocker.rollback()
            response = await call
    assert response.session.status == pb.SESSION_STATUS_CLOSED
    assert await _finish(served) == 0
    log = served.log.decode()
    # Health turned NOT_SERVING before the server stopped accepting calls.
    assert log.index("health: NOT_SERVING") < log.index("stopped")
    assert "shutting down" in log


async def _wait_for_lock_waiter(engine: AsyncEngine, tenant: str) -> None:
    """Until the server's UPDATE is blocked on our lock (seen in pg_stat_activity)."""
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%UPDATE chat_sessions%'"
                    )
                )
            if waiting:
                return
            await asyncio.sleep(0.05)


async def test_invalid_settings_exit_with_code_two_and_one_clear_line(database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--db-pool-size",
        "zero",
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1
    assert "db_pool_size" in lines[0]


async def test_workers_share_one_port_and_all_stop_on_sigterm(
    database_url: str, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await _start(database_url, "--workers", "2", address=f"127.0.0.1:{port}", servers=2)
    try:
        assert SERVING_LINE.findall(server.log) == [str(port).encode()] * 2
        # Separate connections are spread over the workers by the kernel; all must answer.
        for _ in range(6):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                response = await pb_grpc.SessionMonitoringStub(channel).ListSessions(
                    pb.ListSessionsRequest(), metadata=tenant_metadata(tenant)
                )
            assert response.pagination.total == 3
        server.process.send_signal(signal.SIGTERM)
        assert await _finish(server) == 0
        assert server.log.decode().count(" stopped") == 2
    finally:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()


_LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+ ")


async def test_a_normal_start_and_shutdown_print_only_the_services_own_log_lines(
    served: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    served.process.send_signal(signal.SIGTERM)
    assert await _finish(served) == 0
    lines = bytes(served.log).splitlines()
    assert lines
    # No gRPC C-core lines (`I1201 ... fork_posix.cc ...`), no stray warnings or tracebacks.
    assert [line for line in lines if not _LOG_LINE.match(line)] == []


async def test_sigterm_ends_open_watch_streams_at_once_with_a_last_bookmark(
    served: RunningServer, tenant: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        call = stub.WatchSessions(pb.WatchSessionsRequest(), metadata=tenant_metadata(tenant))
        first = await call.read()
        assert first.type == pb.WATCH_EVENT_TYPE_BOOKMARK
        started = asyncio.get_running_loop().time()
        served.process.send_signal(signal.SIGTERM)
        last = await call.read()
        assert last.type == pb.WATCH_EVENT_TYPE_BOOKMARK
        assert await call.code() == grpc.StatusCode.OK
        # Well within the 10 s grace period: a stream does not hold the shutdown up.
        assert asyncio.get_running_loop().time() - started < 5
    assert await _finish(served) == 0
