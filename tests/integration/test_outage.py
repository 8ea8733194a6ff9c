"""A PostgreSQL outage: calls fail fast with UNAVAILABLE, health turns NOT_SERVING, and the same
server recovers by itself once PostgreSQL is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.app import SERVICE_NAME
from server.data.embedded import start_embedded_postgres
from server.data.engine import create_engine
from server.data.migrate import upgrade_to_head
from server.transport import errors
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving
from tests.postgres_control import DedicatedPostgres

# Bound for each call and each polling loop: a hang shows up as a failure, not a stuck suite.
CALL_TIMEOUT = 5.0
RECOVERY_LIMIT = 20.0


async def _health(health: health_pb2_grpc.HealthStub) -> int:
    response = await health.Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=CALL_TIMEOUT
    )
    status: int = response.status
    return status


async def _until_health(health: health_pb2_grpc.HealthStub, wanted: int) -> None:
    async with asyncio.timeout(RECOVERY_LIMIT):
        while True:
            if await _health(health) == wanted:
                return
            await asyncio.sleep(0.1)


async def _detail(stub: pb_grpc.SessionMonitoringStub, tenant: str) -> pb.GetSessionDetailResponse:
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="s-1"),
        metadata=tenant_metadata(tenant),
        timeout=CALL_TIMEOUT,
    )
    return response


def _close(session_id: str) -> pb.UpdateSessionStatusRequest:
    return pb.UpdateSessionStatusRequest(session_id=session_id, status=pb.SESSION_STATUS_CLOSED)


async def _until_calls_succeed(stub: pb_grpc.SessionMonitoringStub, tenant: str) -> None:
    """Until a call succeeds; meanwhile the only acceptable failure is UNAVAILABLE."""
    async with asyncio.timeout(RECOVERY_LIMIT):
        while True:
            try:
                await _detail(stub, tenant)
            except grpc.aio.AioRpcError as error:
                if failure(error).reason != errors.REASON_DATABASE_UNAVAILABLE:
                    raise
            else:
                return
            await asyncio.sleep(0.1)


async def test_database_outage_fails_calls_fast_and_the_same_server_recovers(
    tmp_path: Path, tenant: str
) -> None:
    url = await asyncio.to_thread(start_embedded_postgres, tmp_path)
    postgres = DedicatedPostgres(tmp_path / "postgres", url)
    engine = create_engine(url, pool_size=2, pool_timeout=2, connect_timeout=2)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        await Factory(engine).session(tenant, "s-1")
        async with (
            serving(
                url,
                health_check_interval=0.2,
                db_pool_size=2,
                db_pool_timeout=2,
                db_connect_timeout=2,
            ) as app,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            stub = pb_grpc.SessionMonitoringStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert (await _detail(stub, tenant)).session.session_id == "s-1"
            assert await _health(health) == health_pb2.HealthCheckResponse.SERVING

            await postgres.stop()
            # Every kind of call, twice: first on pooled connections the shutdown broke, then
            # on fresh connection attempts that are refused. None may wait out its deadline.
            for _ in range(2):
                for method, request in (
                    (stub.GetSessionDetail, pb.GetSessionDetailRequest(session_id="s-1")),
                    (stub.ListSessions, pb.ListSessionsRequest()),
                    (stub.UpdateSessionStatus, _close("s-1")),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await method(
                            request, metadata=tenant_metadata(tenant), timeout=CALL_TIMEOUT
                        )
                    result = failure(raised.value)
                    assert result.code == grpc.StatusCode.UNAVAILABLE
                    assert result.reason == errors.REASON_DATABASE_UNAVAILABLE
                    assert result.message == errors.MESSAGE_DATABASE_UNAVAILABLE
            await _until_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)

            await postgres.start()
            await _until_health(health, health_pb2.HealthCheckResponse.SERVING)
            await _until_calls_succeed(stub, tenant)
            updated = await stub.UpdateSessionStatus(
                _close("s-1"),
                metadata=tenant_metadata(tenant),
                timeout=CALL_TIMEOUT,
            )
            assert updated.session.status == pb.SESSION_STATUS_CLOSED
    finally:
        await engine.dispose()
        if postgres.running:
            await postgres.stop()
