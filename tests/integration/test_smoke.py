"""The service answers over a real channel for a tenant with data."""

from __future__ import annotations

from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from tests.factories import Factory, tenant_metadata


async def test_list_sessions_returns_the_tenants_sessions_newest_first(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    ids = await factory.sessions(tenant, 3)
    response = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(tenant))
    assert [s.session_id for s in response.sessions] == ids
    assert response.pagination.total == 3
