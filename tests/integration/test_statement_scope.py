"""The isolation guarantee is mechanical: every statement the server issues is tenant-scoped."""

from __future__ import annotations

from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from tests.factories import Factory, tenant_metadata
from tests.helpers import is_tenant_scoped


async def test_every_statement_of_every_rpc_filters_by_a_bound_tenant_id(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    issued_statements: list[str],
) -> None:
    await factory.session(tenant, "s-1")
    await factory.message(tenant, "s-1")
    before = len(issued_statements)
    metadata = tenant_metadata(tenant)
    await stub.ListSessions(pb.ListSessionsRequest(page=2, page_size=1), metadata=metadata)
    await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-1"), metadata=metadata)
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_CLOSED),
        metadata=metadata,
    )
    issued = issued_statements[before:]
    assert any("chat_session_counts" in s for s in issued)
    assert any("UPDATE chat_sessions" in s for s in issued)
    assert all(is_tenant_scoped(s) for s in issued)


def test_the_scope_check_catches_a_statement_without_a_tenant_predicate() -> None:
    assert not is_tenant_scoped("SELECT count(*) FROM chat_sessions WHERE session_id = $1")
    assert not is_tenant_scoped("SELECT * FROM chat_messages WHERE tenant_id IS NOT NULL")
    assert is_tenant_scoped("SELECT 1")
    assert is_tenant_scoped(
        "SELECT * FROM chat_messages WHERE chat_messages.tenant_id = $1::VARCHAR"
    )
