"""UpdateSessionStatus over a real channel: endTime rules, no-ops, errors and concurrent writers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.schema import sessions_table
from server.transport import errors
from tests.factories import Factory, dumps, tenant_metadata
from tests.helpers import failure

# The creation time of arranged sessions: well before any `now()` the server stamps.
CREATED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
END_TIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
STORED = {
    pb.SESSION_STATUS_ACTIVE: "active",
    pb.SESSION_STATUS_CLOSED: "closed",
    pb.SESSION_STATUS_EXPIRED: "expired",
}


async def _update(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, session_id: str, status: pb.SessionStatus
) -> pb.Session:
    response: pb.UpdateSessionStatusResponse = await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id=session_id, status=status),
        metadata=tenant_metadata(tenant),
    )
    return response.session


async def _detail(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, session_id: str
) -> pb.GetSessionDetailResponse:
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id=session_id), metadata=tenant_metadata(tenant)
    )
    return response


async def _updated_at(engine: AsyncEngine, tenant: str, session_id: str) -> datetime:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(sessions_table.c.updated_at).where(
                sessions_table.c.tenant_id == tenant, sessions_table.c.session_id == session_id
            )
        )
        value: datetime = result.scalar_one()
        return value


async def _database_now(engine: AsyncEngine) -> datetime:
    # The server stamps with PostgreSQL's clock, so bounds come from the same clock.
    async with engine.connect() as conn:
        value: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return value


def _parse_end_time(value: Any) -> datetime:
    assert isinstance(value, str)
    assert END_TIME_TEXT.match(value), value
    return datetime.fromisoformat(value)


async def test_closing_an_active_session_stamps_a_utc_end_time_and_bumps_update_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"status": "active"})
    before = await _database_now(engine)
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    after = await _database_now(engine)

    stored = await factory.metadata(tenant, "s")
    assert stored["status"] == "closed"
    end_time = _parse_end_time(stored["endTime"])
    assert before <= end_time <= after
    assert session.status == pb.SESSION_STATUS_CLOSED
    assert session.end_time.ToDatetime(UTC) == end_time
    assert session.update_time.ToDatetime(UTC) > CREATED
    assert session.update_time.ToDatetime(UTC) == await _updated_at(engine, tenant, "s")


async def test_expiring_an_active_session_stamps_an_end_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={})
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_EXPIRED)
    stored = await factory.metadata(tenant, "s")
    assert stored["status"] == "expired"
    assert session.status == pb.SESSION_STATUS_EXPIRED
    assert session.end_time.ToDatetime(UTC) == _parse_end_time(stored["endTime"])
    assert session.update_time.ToDatetime(UTC) > CREATED


@pytest.mark.parametrize("status", [pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_EXPIRED])
async def test_setting_the_same_terminal_status_again_changes_nothing(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    engine: AsyncEngine,
    tenant: str,
    status: pb.SessionStatus,
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"keep": 1})
    first = await _update(stub, tenant, "s", status)
    stored_after_first = await factory.metadata(tenant, "s")
    updated_after_first = await _updated_at(engine, tenant, "s")

    second = await _update(stub, tenant, "s", status)

    assert await factory.metadata(tenant, "s") == stored_after_first
    assert await _updated_at(engine, tenant, "s") == updated_after_first
    assert second == first


async def test_moving_from_closed_to_expired_keeps_the_original_end_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    closed = await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    original = (await factory.metadata(tenant, "s"))["endTime"]

    expired = await _update(stub, tenant, "s", pb.SESSION_STATUS_EXPIRED)

    stored = await factory.metadata(tenant, "s")
    assert stored == {"status": "expired", "endTime": original}
    assert expired.status == pb.SESSION_STATUS_EXPIRED
    assert expired.end_time == closed.end_time
    assert expired.update_time.ToDatetime(UTC) >= closed.update_time.ToDatetime(UTC)


async def test_a_preexisting_end_time_of_a_closed_session_survives_expiry(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    # Sessions closed by other writers carry their own endTime text; it must not be restamped.
    metadata = {"status": "closed", "endTime": "2024-03-01T13:00:00Z"}
    await factory.session(tenant, "s", created_at=CREATED, metadata=metadata)
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_EXPIRED)
    assert await factory.metadata(tenant, "s") == {**metadata, "status": "expired"}
    assert session.end_time.ToJsonString() == "2024-03-01T13:00:00Z"


async def test_reactivating_a_closed_session_removes_its_end_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"topic": "billing"})
    closed = await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    active = await _update(stub, tenant, "s", pb.SESSION_STATUS_ACTIVE)

    assert await factory.metadata(tenant, "s") == {"topic": "billing", "status": "active"}
    assert active.status == pb.SESSION_STATUS_ACTIVE
    assert not active.HasField("end_time")
    assert active.update_time.ToDatetime(UTC) >= closed.update_time.ToDatetime(UTC)


async def test_closing_again_after_reactivation_stamps_a_new_end_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    metadata = {"status": "active", "endTime": "2024-03-01T13:00:00Z"}
    await factory.session(tenant, "s", created_at=CREATED, metadata=metadata)
    await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    # A stale endTime on an active session belongs to an earlier life; closing restamps it.
    end_time = _parse_end_time((await factory.metadata(tenant, "s"))["endTime"])
    assert end_time > datetime(2024, 3, 1, 13, tzinfo=UTC)


async def test_other_metadata_keys_are_preserved_through_every_transition(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    others: dict[str, Any] = {
        "customer": {"id": 7, "tags": ["vip"]},
        "language": "de",
        "flag": False,
        "nothing": None,
    }
    await factory.session(tenant, "s", created_at=CREATED, metadata=others)
    for status in (
        pb.SESSION_STATUS_CLOSED,
        pb.SESSION_STATUS_EXPIRED,
        pb.SESSION_STATUS_ACTIVE,
        pb.SESSION_STATUS_EXPIRED,
    ):
        await _update(stub, tenant, "s", status)
        stored = await factory.metadata(tenant, "s")
        assert {k: v for k, v in stored.items() if k not in ("status", "endTime")} == others
        assert stored["status"] == STORED[status]


async def test_null_metadata_becomes_an_object_with_status_and_end_time(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata=None)
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    stored = await factory.metadata(tenant, "s")
    assert set(stored) == {"status", "endTime"}
    assert stored["status"] == "closed"
    assert session.end_time.ToDatetime(UTC) == _parse_end_time(stored["endTime"])


async def test_activating_null_metadata_is_a_no_op(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata=None)
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_ACTIVE)
    assert await factory.metadata(tenant, "s") is None
    assert await _updated_at(engine, tenant, "s") == CREATED
    assert session.status == pb.SESSION_STATUS_ACTIVE
    assert session.update_time.ToDatetime(UTC) == CREATED


async def test_activating_a_session_without_a_status_key_is_a_no_op(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"topic": "billing"})
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_ACTIVE)
    assert await factory.metadata(tenant, "s") == {"topic": "billing"}
    assert await _updated_at(engine, tenant, "s") == CREATED
    assert session.status == pb.SESSION_STATUS_ACTIVE
    assert session.update_time.ToDatetime(UTC) == CREATED


async def test_a_session_with_an_unknown_status_can_be_closed(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"status": "paused"})
    before = (await _detail(stub, tenant, "s")).session
    assert before.status == pb.SESSION_STATUS_UNSPECIFIED
    assert before.raw_status == "paused"
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_CLOSED)
    assert session.status == pb.SESSION_STATUS_CLOSED
    assert session.raw_status == ""
    assert session.HasField("end_time")


@pytest.mark.parametrize(
    ("json_text", "status"),
    [
        (dumps([{"status": "active"}]), pb.SESSION_STATUS_CLOSED),
        (dumps([1, 2]), pb.SESSION_STATUS_CLOSED),
        (dumps("closed"), pb.SESSION_STATUS_EXPIRED),
        ("17", pb.SESSION_STATUS_CLOSED),
    ],
)
async def test_metadata_that_is_not_an_object_fails_the_precondition_and_is_left_alone(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    engine: AsyncEngine,
    tenant: str,
    json_text: str,
    status: pb.SessionStatus,
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    await factory.raw_metadata_sql(tenant, "s", json_text)
    stored_before = await factory.metadata(tenant, "s")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _update(stub, tenant, "s", status)

    result = failure(raised.value)
    assert result.code == grpc.StatusCode.FAILED_PRECONDITION
    assert result.reason == errors.REASON_SESSION_METADATA_NOT_OBJECT
    assert await factory.metadata(tenant, "s") == stored_before
    assert await _updated_at(engine, tenant, "s") == CREATED


@pytest.mark.parametrize("json_text", [dumps([1, 2]), dumps("closed"), "17", "true"])
async def test_active_on_metadata_that_is_not_an_object_is_the_no_op_it_is_elsewhere(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    engine: AsyncEngine,
    tenant: str,
    json_text: str,
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    await factory.raw_metadata_sql(tenant, "s", json_text)
    stored_before = await factory.metadata(tenant, "s")
    # Such a session displays as ACTIVE, so asking for ACTIVE changes nothing and succeeds.
    session = await _update(stub, tenant, "s", pb.SESSION_STATUS_ACTIVE)
    assert session.status == pb.SESSION_STATUS_ACTIVE
    assert await factory.metadata(tenant, "s") == stored_before
    assert await _updated_at(engine, tenant, "s") == CREATED


async def test_unknown_session_is_not_found(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _update(stub, tenant, "other", pb.SESSION_STATUS_CLOSED)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert result.reason == errors.REASON_SESSION_NOT_FOUND


async def test_another_tenants_session_is_not_found_and_not_touched(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"status": "active"})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _update(stub, f"{tenant}-other", "s", pb.SESSION_STATUS_CLOSED)
    assert failure(raised.value).reason == errors.REASON_SESSION_NOT_FOUND
    assert await factory.metadata(tenant, "s") == {"status": "active"}


async def test_unspecified_status_is_an_invalid_argument(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _update(stub, tenant, "s", pb.SESSION_STATUS_UNSPECIFIED)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"status"}
    assert await factory.metadata(tenant, "s") is None


@pytest.mark.parametrize(
    "status", [pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_EXPIRED, pb.SESSION_STATUS_ACTIVE]
)
async def test_the_response_equals_what_a_following_get_session_detail_shows(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, status: pb.SessionStatus
) -> None:
    await factory.session(
        tenant,
        "s",
        created_at=CREATED,
        channel_type="whatsapp",
        metadata={"status": "expired", "endTime": "2024-03-01T12:30:00Z", "topic": "x"},
    )
    await factory.message(tenant, "s", created_at=CREATED)
    await factory.message(tenant, "s", created_at=CREATED)
    updated = await _update(stub, tenant, "s", status)
    assert updated == (await _detail(stub, tenant, "s")).session
    assert updated.message_count == 2
    assert updated.channel_type == "whatsapp"
    assert updated.start_time.ToDatetime(UTC) == CREATED


_CONCURRENT_UPDATES = 40
_UPDATE_CYCLE = (pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_ACTIVE, pb.SESSION_STATUS_EXPIRED)


async def _sql_writer(engine: AsyncEngine, tenant: str, session_id: str, key: str) -> None:
    # The way other services add their own keys: a merge on the current row, no read first.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE chat_sessions SET metadata = metadata "
                "|| jsonb_build_object(CAST(:k AS text), CAST(:v AS text)) "
                "WHERE tenant_id = :tenant_id AND session_id = :session_id"
            ),
            {"k": key, "v": f"value-of-{key}", "tenant_id": tenant, "session_id": session_id},
        )


@pytest.mark.parametrize("round_number", range(4))
async def test_concurrent_status_updates_and_sql_writers_lose_no_metadata_key(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    engine: AsyncEngine,
    tenant: str,
    round_number: int,
) -> None:
    await factory.session(tenant, "s", created_at=CREATED, metadata={"seed": round_number})
    requested = [_UPDATE_CYCLE[i % len(_UPDATE_CYCLE)] for i in range(_CONCURRENT_UPDATES)]
    keys = [f"writer-{i}" for i in range(_CONCURRENT_UPDATES)]
    calls: list[Awaitable[Any]] = []
    for status, key in zip(requested, keys, strict=True):
        calls.append(_update(stub, tenant, "s", status))
        calls.append(_sql_writer(engine, tenant, "s", key))

    results = await asyncio.gather(*calls)

    stored = await factory.metadata(tenant, "s")
    assert stored["seed"] == round_number
    for key in keys:
        assert stored.get(key) == f"value-of-{key}", key
    assert set(stored) <= {"seed", "status", "endTime", *keys}
    assert stored["status"] in {STORED[s] for s in requested}
    if stored["status"] in ("closed", "expired"):
        _parse_end_time(stored["endTime"])
    else:
        assert "endTime" not in stored

    for session in results[::2]:
        assert isinstance(session, pb.Session)
        assert session.status in requested
        terminal = session.status in (pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_EXPIRED)
        assert session.HasField("end_time") == terminal

    detail = await _detail(stub, tenant, "s")
    assert detail.session.status == next(k for k, v in STORED.items() if v == stored["status"])
    assert detail.session.HasField("end_time") == ("endTime" in stored)
    assert len(detail.metadata.fields) == len(stored)


async def test_updated_at_is_bumped_past_the_previous_value_on_each_real_change(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s", created_at=CREATED)
    previous = CREATED
    for status in (pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_ACTIVE, pb.SESSION_STATUS_EXPIRED):
        session = await _update(stub, tenant, "s", status)
        current = await _updated_at(engine, tenant, "s")
        assert current > previous
        assert session.update_time.ToDatetime(UTC) == current
        previous = current
