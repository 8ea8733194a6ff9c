"""Tenant identification and isolation, and the status each failure maps to, via the real server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.transport import errors
from tests.factories import BASE_TIME, Factory, tenant_metadata
from tests.helpers import RpcFailure, failure, serving

Metadata = Sequence[tuple[str, str | bytes]]
Call = Callable[[pb_grpc.SessionMonitoringStub, Metadata], Awaitable[Any]]

UNREACHABLE_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
# Generous enough for a loaded machine; the unreachable database refuses at once anyway.
CALL_TIMEOUT = 30.0


def status(value: int) -> pb.SessionStatus:
    """Any enum number, as a client built against a newer proto could send it."""
    return cast(pb.SessionStatus, value)


def new_tenant(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# One well-formed request per RPC, so failures are about the call's context, not its fields.
RPCS: dict[str, Call] = {
    "ListSessions": lambda stub, md: stub.ListSessions(
        pb.ListSessionsRequest(), metadata=md, timeout=CALL_TIMEOUT
    ),
    "GetSessionDetail": lambda stub, md: stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="s-00000"), metadata=md, timeout=CALL_TIMEOUT
    ),
    "UpdateSessionStatus": lambda stub, md: stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-00000", status=pb.SESSION_STATUS_CLOSED),
        metadata=md,
        timeout=CALL_TIMEOUT,
    ),
}
rpc_names = pytest.mark.parametrize("rpc", list(RPCS))


async def call_failure(call: Awaitable[Any]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return failure(raised.value)


async def detail_failure(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, session_id: str
) -> RpcFailure:
    return await call_failure(
        stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id=session_id), metadata=tenant_metadata(tenant)
        )
    )


async def update_failure(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, session_id: str
) -> RpcFailure:
    return await call_failure(
        stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id=session_id, status=pb.SESSION_STATUS_CLOSED),
            metadata=tenant_metadata(tenant),
        )
    )


# --- Identifying the tenant -------------------------------------------------------------------


@rpc_names
async def test_a_call_without_x_tenant_id_is_unauthenticated(
    stub: pb_grpc.SessionMonitoringStub, rpc: str
) -> None:
    result = await call_failure(RPCS[rpc](stub, [("x-other", "value")]))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.reason == errors.REASON_MISSING_TENANT_ID
    assert result.message == errors.MESSAGE_MISSING_TENANT_ID


@rpc_names
async def test_an_empty_x_tenant_id_is_unauthenticated(
    stub: pb_grpc.SessionMonitoringStub, rpc: str
) -> None:
    result = await call_failure(RPCS[rpc](stub, [("x-tenant-id", "")]))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.reason == errors.REASON_MISSING_TENANT_ID


@pytest.mark.parametrize(
    "value",
    ["acme corp", "acme/eu", "acme@eu", "acme*", "acme,eu", "a" * 129],
    ids=["space", "slash", "at-sign", "asterisk", "comma", "129-chars"],
)
@rpc_names
async def test_a_malformed_x_tenant_id_is_an_invalid_tenant(
    stub: pb_grpc.SessionMonitoringStub, rpc: str, value: str
) -> None:
    result = await call_failure(RPCS[rpc](stub, [("x-tenant-id", value)]))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_TENANT_ID


@pytest.mark.parametrize("second", ["same", "other"])
@rpc_names
async def test_a_repeated_x_tenant_id_is_an_invalid_tenant(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, rpc: str, second: str
) -> None:
    other = tenant if second == "same" else new_tenant()
    result = await call_failure(RPCS[rpc](stub, [("x-tenant-id", tenant), ("x-tenant-id", other)]))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_TENANT_ID


@pytest.mark.parametrize("with_text", [False, True], ids=["alone", "beside-text"])
@rpc_names
async def test_a_binary_x_tenant_id_is_an_invalid_tenant(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, rpc: str, with_text: bool
) -> None:
    metadata: list[tuple[str, str | bytes]] = [("x-tenant-id-bin", tenant.encode())]
    if with_text:
        metadata.insert(0, ("x-tenant-id", tenant))
    result = await call_failure(RPCS[rpc](stub, metadata))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_TENANT_ID


@pytest.mark.parametrize(
    "value",
    ["a", "a" * 128, "Acme.EU_1:prod-2", "0123456789", "urn:tenant:9f1c-42"],
    ids=["one-char", "128-chars", "every-symbol", "digits", "urn"],
)
async def test_every_well_formed_tenant_id_is_accepted(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, value: str
) -> None:
    # These ids are not unique per test, so the session id is, and only it is looked for.
    session_id = f"accepted-{uuid.uuid4().hex}"
    await factory.session(value, session_id)
    response = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id=session_id), metadata=tenant_metadata(value)
    )
    assert response.session.tenant_id == value


async def test_a_tenant_error_is_reported_before_request_validation(
    stub: pb_grpc.SessionMonitoringStub,
) -> None:
    result = await call_failure(stub.ListSessions(pb.ListSessionsRequest(page=-1)))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.reason == errors.REASON_MISSING_TENANT_ID


# --- Isolation between tenants ----------------------------------------------------------------


@pytest.fixture
def tenants() -> tuple[str, str]:
    """Two tenants whose ids differ only by letter case, so no comparison may fold case."""
    suffix = uuid.uuid4().hex[:16]
    return f"Acme-{suffix}", f"acme-{suffix}"


async def _two_tenants_sharing_ids(factory: Factory, tenants: tuple[str, str]) -> None:
    first, second = tenants
    for session_id in ("shared-1", "shared-2"):
        await factory.session(first, session_id, metadata={"owner": "first"})
        await factory.session(
            second,
            session_id,
            metadata={"owner": "second", "status": "expired"},
            channel_type="whatsapp",
            created_at=BASE_TIME.replace(year=2025),
        )
    await factory.session(second, "only-second", metadata={"owner": "second"})
    for _ in range(2):
        await factory.message(second, "shared-1", content="second's secret")


async def test_list_shows_each_tenant_only_its_own_sessions(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenants: tuple[str, str]
) -> None:
    first, second = tenants
    await _two_tenants_sharing_ids(factory, tenants)

    mine = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(first))
    assert sorted(s.session_id for s in mine.sessions) == ["shared-1", "shared-2"]
    assert {s.tenant_id for s in mine.sessions} == {first}
    assert {s.status for s in mine.sessions} == {pb.SESSION_STATUS_ACTIVE}
    assert {s.message_count for s in mine.sessions} == {0}
    assert mine.pagination.total == 2

    theirs = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(second))
    assert sorted(s.session_id for s in theirs.sessions) == ["only-second", "shared-1", "shared-2"]
    assert {s.tenant_id for s in theirs.sessions} == {second}
    assert theirs.pagination.total == 3

    expired = await stub.ListSessions(
        pb.ListSessionsRequest(status=pb.SESSION_STATUS_EXPIRED), metadata=tenant_metadata(first)
    )
    assert list(expired.sessions) == []
    assert expired.pagination.total == 0


async def test_detail_of_a_shared_id_shows_the_callers_own_session(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenants: tuple[str, str]
) -> None:
    first, _ = tenants
    await _two_tenants_sharing_ids(factory, tenants)
    detail = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="shared-1"), metadata=tenant_metadata(first)
    )
    assert detail.session.tenant_id == first
    assert detail.session.channel_type == "web"
    assert detail.session.message_count == 0
    assert list(detail.messages) == []
    assert dict(detail.metadata) == {"owner": "first"}


async def test_detail_of_another_tenants_session_is_indistinguishable_from_a_missing_one(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenants: tuple[str, str]
) -> None:
    first, _ = tenants
    await _two_tenants_sharing_ids(factory, tenants)
    foreign = await detail_failure(stub, first, "only-second")
    missing = await detail_failure(stub, first, "never-existed")
    assert foreign.code == grpc.StatusCode.NOT_FOUND
    assert foreign.reason == errors.REASON_SESSION_NOT_FOUND
    assert foreign.message == 'session "only-second" not found'
    assert foreign.error_metadata == {"session_id": "only-second"}
    # Nothing but the id it was asked about tells the two apart.
    assert (foreign.code, foreign.reason) == (missing.code, missing.reason)
    assert missing.message == 'session "never-existed" not found'
    assert missing.error_metadata == {"session_id": "never-existed"}


async def test_update_of_another_tenants_session_is_not_found_and_changes_nothing(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenants: tuple[str, str]
) -> None:
    first, second = tenants
    await _two_tenants_sharing_ids(factory, tenants)
    before = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=100), metadata=tenant_metadata(second)
    )

    foreign = await update_failure(stub, first, "only-second")
    missing = await update_failure(stub, first, "never-existed")
    assert foreign.code == grpc.StatusCode.NOT_FOUND
    assert foreign.reason == errors.REASON_SESSION_NOT_FOUND
    # Nothing but the id it was asked about tells the two apart.
    assert foreign.message == 'session "only-second" not found'
    assert (foreign.code, foreign.reason) == (missing.code, missing.reason)
    assert missing.message == 'session "never-existed" not found'
    assert await factory.metadata(second, "only-second") == {"owner": "second"}

    after = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=100), metadata=tenant_metadata(second)
    )
    # The watch token moves with any writer's change anywhere; the sessions must not.
    after.ClearField("watch_token")
    before.ClearField("watch_token")
    assert after == before, "update_time or any other field of the other tenant moved"


async def test_update_of_a_shared_id_touches_only_the_callers_row(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenants: tuple[str, str]
) -> None:
    first, second = tenants
    await _two_tenants_sharing_ids(factory, tenants)
    response = await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="shared-1", status=pb.SESSION_STATUS_CLOSED),
        metadata=tenant_metadata(first),
    )
    assert response.session.tenant_id == first
    assert response.session.status == pb.SESSION_STATUS_CLOSED
    assert response.session.message_count == 0
    mine = await factory.metadata(first, "shared-1")
    assert mine["status"] == "closed"
    assert mine["owner"] == "first"
    assert await factory.metadata(second, "shared-1") == {"owner": "second", "status": "expired"}


# --- INVALID_ARGUMENT, one violation per bad field --------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


_LATER = int(BASE_TIME.timestamp())
_YEAR_10000 = 253_402_300_800
_BEFORE_YEAR_1 = -62_135_596_801
NOT_A_PAGE_CURSOR = "garbage"

INVALID_REQUESTS: dict[str, tuple[str, Any, str]] = {
    "list-negative-page": ("ListSessions", pb.ListSessionsRequest(page=-1), "page"),
    "list-page-size-minus-one": ("ListSessions", pb.ListSessionsRequest(page_size=-1), "page_size"),
    "list-page-size-101": ("ListSessions", pb.ListSessionsRequest(page_size=101), "page_size"),
    "list-start-after-end": (
        "ListSessions",
        pb.ListSessionsRequest(start_time=_ts(_LATER, 1000), end_time=_ts(_LATER)),
        "start_time",
    ),
    "list-status-99": ("ListSessions", pb.ListSessionsRequest(status=status(99)), "status"),
    "list-status-negative": ("ListSessions", pb.ListSessionsRequest(status=status(-1)), "status"),
    "list-start-nanos-negative": (
        "ListSessions",
        pb.ListSessionsRequest(start_time=_ts(_LATER, -1)),
        "start_time",
    ),
    "list-end-nanos-too-big": (
        "ListSessions",
        pb.ListSessionsRequest(end_time=_ts(_LATER, 1_000_000_000)),
        "end_time",
    ),
    "list-end-after-year-9999": (
        "ListSessions",
        pb.ListSessionsRequest(end_time=_ts(_YEAR_10000)),
        "end_time",
    ),
    "list-start-before-year-1": (
        "ListSessions",
        pb.ListSessionsRequest(start_time=_ts(_BEFORE_YEAR_1)),
        "start_time",
    ),
    "list-channel-256-chars": (
        "ListSessions",
        pb.ListSessionsRequest(channel_type="w" * 256),
        "channel_type",
    ),
    "list-channel-control-char": (
        "ListSessions",
        pb.ListSessionsRequest(channel_type="we\x00b"),
        "channel_type",
    ),
    "list-garbage-token": (
        "ListSessions",
        pb.ListSessionsRequest(page_token=NOT_A_PAGE_CURSOR),
        "page_token",
    ),
    "detail-empty-id": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id=""),
        "session_id",
    ),
    "detail-256-char-id": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id="s" * 256),
        "session_id",
    ),
    "detail-control-char-id": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id="s\n1"),
        "session_id",
    ),
    "detail-page-size-minus-one": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id="s", page_size=-1),
        "page_size",
    ),
    "detail-page-size-1001": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id="s", page_size=1001),
        "page_size",
    ),
    "detail-garbage-token": (
        "GetSessionDetail",
        pb.GetSessionDetailRequest(session_id="s", page_token=NOT_A_PAGE_CURSOR),
        "page_token",
    ),
    "update-unspecified-status": (
        "UpdateSessionStatus",
        pb.UpdateSessionStatusRequest(session_id="s", status=pb.SESSION_STATUS_UNSPECIFIED),
        "status",
    ),
    "update-status-99": (
        "UpdateSessionStatus",
        pb.UpdateSessionStatusRequest(session_id="s", status=status(99)),
        "status",
    ),
    "update-empty-id": (
        "UpdateSessionStatus",
        pb.UpdateSessionStatusRequest(session_id="", status=pb.SESSION_STATUS_CLOSED),
        "session_id",
    ),
    "update-256-char-id": (
        "UpdateSessionStatus",
        pb.UpdateSessionStatusRequest(session_id="s" * 256, status=pb.SESSION_STATUS_CLOSED),
        "session_id",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_REQUESTS))
async def test_each_invalid_field_is_invalid_argument_naming_that_field(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, case: str
) -> None:
    rpc, request, field = INVALID_REQUESTS[case]
    # A real session named like the requests', so NOT_FOUND cannot stand in for validation.
    await factory.session(tenant, "s")
    result = await call_failure(getattr(stub, rpc)(request, metadata=tenant_metadata(tenant)))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert result.message.startswith(errors.MESSAGE_INVALID_ARGUMENT)
    assert list(result.field_violations) == [field]
    assert result.field_violations[field]


async def test_every_bad_list_field_gets_its_own_violation(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    request = pb.ListSessionsRequest(
        page=-1, page_size=101, status=status(99), channel_type="c" * 256
    )
    result = await call_failure(stub.ListSessions(request, metadata=tenant_metadata(tenant)))
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"page", "page_size", "status", "channel_type"}


async def test_every_bad_update_field_gets_its_own_violation(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    request = pb.UpdateSessionStatusRequest(session_id="", status=pb.SESSION_STATUS_UNSPECIFIED)
    result = await call_failure(stub.UpdateSessionStatus(request, metadata=tenant_metadata(tenant)))
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"session_id", "status"}


async def test_a_255_character_session_id_is_valid_and_simply_not_found(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    longest = "s" * 255
    assert (await detail_failure(stub, tenant, longest)).reason == errors.REASON_SESSION_NOT_FOUND
    assert (await update_failure(stub, tenant, longest)).reason == errors.REASON_SESSION_NOT_FOUND


# --- Failures below the service ---------------------------------------------------------------


@asynccontextmanager
async def standalone_server(database_url: str) -> AsyncIterator[pb_grpc.SessionMonitoringStub]:
    """A second server of our own over `database_url`, reached over its own channel."""
    async with (
        serving(database_url, db_pool_size=2, db_pool_timeout=2, db_connect_timeout=2) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        yield pb_grpc.SessionMonitoringStub(channel)


@rpc_names
async def test_an_unreachable_database_is_unavailable(rpc: str, tenant: str) -> None:
    async with standalone_server(UNREACHABLE_DATABASE_URL) as stub:
        # Twice: a failed connection attempt must not leave the pool in a different state.
        for _ in range(2):
            result = await call_failure(RPCS[rpc](stub, tenant_metadata(tenant)))
            assert result.code == grpc.StatusCode.UNAVAILABLE
            assert result.reason == errors.REASON_DATABASE_UNAVAILABLE
            assert result.message == errors.MESSAGE_DATABASE_UNAVAILABLE


async def test_tenant_and_argument_errors_need_no_database(tenant: str) -> None:
    async with standalone_server(UNREACHABLE_DATABASE_URL) as stub:
        missing = await call_failure(RPCS["ListSessions"](stub, []))
        assert missing.reason == errors.REASON_MISSING_TENANT_ID
        invalid = await call_failure(
            stub.ListSessions(
                pb.ListSessionsRequest(page_size=101), metadata=tenant_metadata(tenant)
            )
        )
        assert invalid.reason == errors.REASON_INVALID_ARGUMENT
        assert list(invalid.field_violations) == ["page_size"]


@asynccontextmanager
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A database with none of the service's tables: every query fails in an unexpected way."""
    name = f"sessionmonitoring_empty_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@rpc_names
async def test_an_unexpected_failure_is_internal_and_leaks_nothing(
    server_url: str, tenant: str, rpc: str
) -> None:
    async with empty_database(server_url) as url, standalone_server(url) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await RPCS[rpc](stub, tenant_metadata(tenant))
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INTERNAL
    assert result.reason == errors.REASON_INTERNAL
    assert result.message == errors.MESSAGE_INTERNAL
    assert result.field_violations == {}
    # The incident id ties the reply to the server log; it is the only extra the caller gets.
    assert set(result.error_metadata) == {"incident_id"}
    assert result.error_metadata["incident_id"]
    # The driver's message would name the missing relation; nothing of it may reach the caller.
    trailing = str(raised.value.trailing_metadata())
    for internal in ("chat_sessions", "chat_messages", "does not exist", "Undefined", "Traceback"):
        assert internal not in trailing, internal
