"""The service answers over a real channel for a tenant with data."""

from __future__ import annotations

import grpc
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.transport import errors
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure


async def test_list_sessions_returns_the_tenants_sessions_newest_first(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    ids = await factory.sessions(tenant, 3)
    response = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(tenant))
    assert [s.session_id for s in response.sessions] == ids
    assert response.pagination.total == 3


async def test_a_call_without_tenant_is_unauthenticated_with_reason(
    stub: pb_grpc.SessionMonitoringStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSessions(pb.ListSessionsRequest())
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.reason == errors.REASON_MISSING_TENANT_ID
