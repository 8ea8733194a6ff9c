"""ListSessions via the real server: filters, session fields, ordering, page numbers and tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.schema import sessions_table
from server.domain.filters import SessionFilters
from server.domain.time_keys import key_of
from server.transport import errors, page_tokens
from tests import forged_tokens
from tests.factories import BASE_TIME, Factory, dumps, tenant_metadata
from tests.helpers import failure

MICROSECOND = timedelta(microseconds=1)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(moment)
    return result


def moment(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def ids(response: pb.ListSessionsResponse) -> list[str]:
    return [session.session_id for session in response.sessions]


def other_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


async def insert_sessions(
    engine: AsyncEngine,
    tenant: str,
    rows: Iterable[tuple[str, datetime]],
    *,
    metadata: Any = None,
    channel_type: str | None = "web",
) -> None:
    """Bulk-insert (session_id, created_at) rows in one statement; factory.session is one each."""
    values = [
        {
            "tenant_id": tenant,
            "session_id": session_id,
            "created_at": created_at,
            "updated_at": created_at,
            "metadata": metadata,
            "channel_type": channel_type,
        }
        for session_id, created_at in rows
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(sessions_table), values)


def newest_first(rows: Iterable[tuple[str, datetime]]) -> list[str]:
    # Ids in these tests are fixed-width ASCII, so Python's order equals any PostgreSQL collation.
    return [session_id for session_id, _ in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]


async def list_sessions(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, **fields: Any
) -> pb.ListSessionsResponse:
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(**fields), metadata=tenant_metadata(tenant)
    )
    return response


async def walk_tokens(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, **fields: Any
) -> list[pb.ListSessionsResponse]:
    """Every page, following next_page_token from the first page until it is empty."""
    pages = [await list_sessions(stub, tenant, **fields)]
    while pages[-1].next_page_token:
        assert len(pages) <= 1000, "next_page_token never ran out"
        pages.append(
            await list_sessions(stub, tenant, page_token=pages[-1].next_page_token, **fields)
        )
    return pages


async def walk_page_numbers(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, **fields: Any
) -> list[pb.ListSessionsResponse]:
    """Every page by number, 1 to total_pages."""
    first = await list_sessions(stub, tenant, page=1, **fields)
    pages = [first]
    for number in range(2, first.pagination.total_pages + 1):
        pages.append(await list_sessions(stub, tenant, page=number, **fields))
    return pages


async def expect_invalid(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, field: str, **fields: Any
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_sessions(stub, tenant, **fields)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert field in result.field_violations, result.field_violations


async def page_token_refusal(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, **fields: Any
) -> str:
    """The description of the page_token violation the call is refused with."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_sessions(stub, tenant, **fields)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"page_token"}, result.field_violations
    return result.field_violations["page_token"]


# --- Session fields ---------------------------------------------------------------------------


async def test_each_session_reports_status_times_channel_and_message_count(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    shapes: dict[str, Any] = {
        "closed-utc": {"status": "closed", "endTime": "2026-01-02T03:04:05.123456Z"},
        "expired-offset": {"status": "expired", "endTime": "2026-01-02T05:04:05+02:00"},
        "closed-naive": {"status": "closed", "endTime": "2026-01-02T03:04:05"},
        "closed-garbage-end": {"status": "closed", "endTime": "yesterday"},
        "closed-numeric-end": {"status": "closed", "endTime": 1767323045},
        "closed-no-end": {"status": "closed"},
        "active-with-end": {"status": "active", "endTime": "2026-01-02T03:04:05Z"},
        "unknown-status": {"status": "paused", "endTime": "2026-01-02T03:04:05Z"},
        "numeric-status": {"status": 5},
        "no-status": {"topic": "billing"},
        "null-metadata": None,
    }
    created = {}
    for index, (session_id, metadata) in enumerate(shapes.items()):
        created[session_id] = BASE_TIME + timedelta(minutes=index, microseconds=index)
        await factory.session(tenant, session_id, created_at=created[session_id], metadata=metadata)
    await factory.session(tenant, "no-channel", created_at=BASE_TIME, channel_type=None)
    await factory.session(tenant, "whatsapp", created_at=BASE_TIME, channel_type="whatsapp")
    for _ in range(3):
        await factory.message(tenant, "closed-utc")

    response = await list_sessions(stub, tenant, page_size=100)
    by_id = {session.session_id: session for session in response.sessions}
    assert set(by_id) == {*shapes, "no-channel", "whatsapp"}

    end = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    closed = by_id["closed-utc"]
    assert closed.status == pb.SESSION_STATUS_CLOSED
    assert closed.raw_status == ""
    assert moment(closed.end_time) == end.replace(microsecond=123456)
    assert closed.message_count == 3
    assert closed.tenant_id == tenant
    assert closed.channel_type == "web"
    assert moment(closed.start_time) == created["closed-utc"]
    assert moment(closed.update_time) == created["closed-utc"]

    assert by_id["expired-offset"].status == pb.SESSION_STATUS_EXPIRED
    assert moment(by_id["expired-offset"].end_time) == end
    assert moment(by_id["closed-naive"].end_time) == end, "naive endTime is taken as UTC"
    for unparseable in ("closed-garbage-end", "closed-numeric-end", "closed-no-end"):
        assert by_id[unparseable].status == pb.SESSION_STATUS_CLOSED
        assert not by_id[unparseable].HasField("end_time"), unparseable
    # end_time belongs to closed/expired sessions only, whatever the metadata holds.
    assert by_id["active-with-end"].status == pb.SESSION_STATUS_ACTIVE
    assert not by_id["active-with-end"].HasField("end_time")
    assert by_id["unknown-status"].status == pb.SESSION_STATUS_UNSPECIFIED
    assert by_id["unknown-status"].raw_status == "paused"
    assert not by_id["unknown-status"].HasField("end_time")
    assert by_id["numeric-status"].status == pb.SESSION_STATUS_UNSPECIFIED
    assert by_id["numeric-status"].raw_status == "5"
    for active in ("no-status", "null-metadata", "no-channel"):
        assert by_id[active].status == pb.SESSION_STATUS_ACTIVE, active
        assert by_id[active].raw_status == ""
    assert by_id["no-status"].message_count == 0
    assert not by_id["no-channel"].HasField("channel_type")
    assert by_id["whatsapp"].channel_type == "whatsapp"
    # A session created with its time in microseconds keeps them.
    assert moment(by_id["closed-naive"].start_time).microsecond == 2


# --- Filters ----------------------------------------------------------------------------------


async def _status_zoo(factory: Factory, tenant: str) -> dict[str, list[str]]:
    """One session per stored status shape; returns the ids each status filter must keep."""
    shapes: dict[str, Any] = {
        "a-active": {"status": "active"},
        "a-no-status": {"topic": "x"},
        "a-null-status": {"status": None},
        "a-null-metadata": None,
        "a-array-metadata": [1, 2],
        "c-closed": {"status": "closed", "endTime": "2026-01-02T00:00:00Z"},
        "c-closed-2": {"status": "closed"},
        "e-expired": {"status": "expired"},
        "u-unknown": {"status": "archived"},
    }
    for index, (session_id, metadata) in enumerate(shapes.items()):
        await factory.session(
            tenant, session_id, created_at=BASE_TIME + timedelta(minutes=index), metadata=metadata
        )
    # JSON null (as opposed to SQL NULL) can only be written as raw JSON.
    await factory.session(tenant, "a-json-null", created_at=BASE_TIME - timedelta(minutes=1))
    await factory.raw_metadata_sql(tenant, "a-json-null", "null")
    everything = [*shapes, "a-json-null"]
    return {
        "active": sorted(s for s in everything if s.startswith("a-")),
        "closed": ["c-closed", "c-closed-2"],
        "expired": ["e-expired"],
        "any": sorted(everything),
    }


async def test_status_filter_keeps_only_sessions_with_that_status(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await _status_zoo(factory, tenant)
    for status, key in (
        (pb.SESSION_STATUS_ACTIVE, "active"),
        (pb.SESSION_STATUS_CLOSED, "closed"),
        (pb.SESSION_STATUS_EXPIRED, "expired"),
        (pb.SESSION_STATUS_UNSPECIFIED, "any"),
    ):
        response = await list_sessions(stub, tenant, status=status, page_size=100)
        assert sorted(ids(response)) == expected[key], key
        assert response.pagination.total == len(expected[key]), key
        if status != pb.SESSION_STATUS_UNSPECIFIED:
            assert {s.status for s in response.sessions} == {status}


async def test_active_filter_matches_sessions_without_metadata_or_status(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "null-metadata", metadata=None)
    await factory.session(tenant, "empty-object", metadata={})
    await factory.session(tenant, "closed", metadata={"status": "closed"})
    response = await list_sessions(stub, tenant, status=pb.SESSION_STATUS_ACTIVE)
    assert sorted(ids(response)) == ["empty-object", "null-metadata"]
    assert response.pagination.total == 2


async def test_status_filter_totals_follow_status_updates(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 5)
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-00001", status=pb.SESSION_STATUS_CLOSED),
        metadata=tenant_metadata(tenant),
    )
    # Another writer changes metadata behind the service's back.
    await factory.raw_metadata_sql(tenant, "s-00003", dumps({"status": "expired"}))
    counts = {
        status: (await list_sessions(stub, tenant, status=status)).pagination.total
        for status in (
            pb.SESSION_STATUS_ACTIVE,
            pb.SESSION_STATUS_CLOSED,
            pb.SESSION_STATUS_EXPIRED,
            pb.SESSION_STATUS_UNSPECIFIED,
        )
    }
    assert counts == {
        pb.SESSION_STATUS_ACTIVE: 3,
        pb.SESSION_STATUS_CLOSED: 1,
        pb.SESSION_STATUS_EXPIRED: 1,
        pb.SESSION_STATUS_UNSPECIFIED: 5,
    }
    closed = await list_sessions(stub, tenant, status=pb.SESSION_STATUS_CLOSED)
    assert ids(closed) == ["s-00001"]


async def test_start_and_end_time_are_inclusive_to_the_microsecond(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    start = BASE_TIME + timedelta(hours=1)
    end = start + timedelta(hours=2)
    rows = [
        ("before-start", start - MICROSECOND),
        ("at-start", start),
        ("inside", start + timedelta(hours=1)),
        ("at-end", end),
        ("after-end", end + MICROSECOND),
    ]
    await insert_sessions(engine, tenant, rows)

    both = await list_sessions(stub, tenant, start_time=timestamp(start), end_time=timestamp(end))
    assert ids(both) == ["at-end", "inside", "at-start"]
    assert both.pagination.total == 3

    from_start = await list_sessions(stub, tenant, start_time=timestamp(start))
    assert ids(from_start) == ["after-end", "at-end", "inside", "at-start"]
    assert from_start.pagination.total == 4

    to_end = await list_sessions(stub, tenant, end_time=timestamp(end))
    assert ids(to_end) == ["at-end", "inside", "at-start", "before-start"]
    assert to_end.pagination.total == 4


async def test_equal_start_and_end_time_keep_the_sessions_created_at_that_instant(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    instant = BASE_TIME + timedelta(microseconds=500)
    await insert_sessions(
        engine,
        tenant,
        [
            ("x-1", instant),
            ("x-2", instant),
            ("y", instant - MICROSECOND),
            ("z", instant + MICROSECOND),
        ],
    )
    response = await list_sessions(
        stub, tenant, start_time=timestamp(instant), end_time=timestamp(instant)
    )
    assert ids(response) == ["x-2", "x-1"]
    assert response.pagination.total == 2


async def test_sub_microsecond_bounds_never_admit_a_row_outside_them(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    at = BASE_TIME + timedelta(seconds=10)
    await insert_sessions(engine, tenant, [("at", at), ("next", at + MICROSECOND)])
    # 500 ns after `at`: the row at `at` is before the bound, the next microsecond is not.
    start = timestamp_pb2.Timestamp(seconds=int(at.timestamp()), nanos=500)
    response = await list_sessions(stub, tenant, start_time=start)
    assert ids(response) == ["next"]
    # 1500 ns after `at`: the row one microsecond after `at` is within the bound.
    end = timestamp_pb2.Timestamp(seconds=int(at.timestamp()), nanos=1500)
    response = await list_sessions(stub, tenant, end_time=end)
    assert ids(response) == ["next", "at"]


async def test_channel_type_filter_keeps_only_that_channel(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "web-1", channel_type="web")
    await factory.session(tenant, "web-2", channel_type="web", created_at=BASE_TIME + MICROSECOND)
    await factory.session(tenant, "wa-1", channel_type="whatsapp")
    await factory.session(tenant, "none-1", channel_type=None)

    web = await list_sessions(stub, tenant, channel_type="web")
    assert ids(web) == ["web-2", "web-1"]
    assert web.pagination.total == 2
    whatsapp = await list_sessions(stub, tenant, channel_type="whatsapp")
    assert ids(whatsapp) == ["wa-1"]
    # Channels are matched exactly, not by case or prefix.
    for other in ("WEB", "we", "telegram"):
        response = await list_sessions(stub, tenant, channel_type=other)
        assert ids(response) == [], other
        assert response.pagination.total == 0
        assert response.pagination.total_pages == 0
    unfiltered = await list_sessions(stub, tenant)
    assert unfiltered.pagination.total == 4


async def test_all_filters_combine_with_and(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    window_start = BASE_TIME + timedelta(hours=1)
    window_end = BASE_TIME + timedelta(hours=2)
    inside = window_start + timedelta(minutes=30)
    outside = window_end + timedelta(minutes=30)
    closed = {"status": "closed"}
    cases = [
        ("match-1", inside, closed, "web"),
        ("match-2", window_start, closed, "web"),
        ("match-3", window_end, closed, "web"),
        ("wrong-time", outside, closed, "web"),
        ("wrong-status", inside, {"status": "active"}, "web"),
        ("wrong-channel", inside, closed, "whatsapp"),
        ("no-channel", inside, closed, None),
    ]
    for session_id, created_at, metadata, channel in cases:
        await factory.session(
            tenant, session_id, created_at=created_at, metadata=metadata, channel_type=channel
        )
    filters: dict[str, Any] = {
        "status": pb.SESSION_STATUS_CLOSED,
        "channel_type": "web",
        "start_time": timestamp(window_start),
        "end_time": timestamp(window_end),
    }
    response = await list_sessions(stub, tenant, **filters)
    assert ids(response) == ["match-3", "match-1", "match-2"]
    assert response.pagination.total == 3
    # Each filter on its own lets through exactly the row that only it excludes.
    without_channel = {k: v for k, v in filters.items() if k != "channel_type"}
    assert sorted(ids(await list_sessions(stub, tenant, **without_channel))) == [
        "match-1",
        "match-2",
        "match-3",
        "no-channel",
        "wrong-channel",
    ]
    without_status = {k: v for k, v in filters.items() if k != "status"}
    assert "wrong-status" in ids(await list_sessions(stub, tenant, **without_status))
    without_end = {k: v for k, v in filters.items() if k != "end_time"}
    assert "wrong-time" in ids(await list_sessions(stub, tenant, **without_end))


async def test_a_combined_filter_pages_with_exact_totals(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    wanted = [(f"w-{i:03d}", BASE_TIME + timedelta(minutes=i)) for i in range(23)]
    await insert_sessions(engine, tenant, wanted, metadata={"status": "expired"})
    await insert_sessions(
        engine,
        tenant,
        [(f"n-{i:03d}", BASE_TIME + timedelta(minutes=i)) for i in range(23)],
        metadata={"status": "expired"},
        channel_type="sms",
    )
    await insert_sessions(
        engine, tenant, [(f"a-{i:03d}", BASE_TIME + timedelta(minutes=i)) for i in range(23)]
    )
    fields: dict[str, Any] = {
        "status": pb.SESSION_STATUS_EXPIRED,
        "channel_type": "web",
        "page_size": 5,
    }
    by_token = await walk_tokens(stub, tenant, **fields)
    by_number = await walk_page_numbers(stub, tenant, **fields)
    expected = newest_first(wanted)
    assert [i for page in by_token for i in ids(page)] == expected
    assert [i for page in by_number for i in ids(page)] == expected
    for page in [*by_token, *by_number]:
        assert page.pagination.total == 23
        assert page.pagination.total_pages == 5


# Rows over four UTC days, several sharing one instant, and one day with none: page numbers must
# seek across whole days (counters), partial-day edges (rows) and empty days alike.
_SPREAD = [
    (f"s-{i:03d}", BASE_TIME + timedelta(hours=7 * (i // 3), minutes=0 if i % 3 else 17))
    for i in range(40)
    if not 7 <= i // 3 <= 10
]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),
        (BASE_TIME + timedelta(hours=5), None),
        (None, BASE_TIME + timedelta(days=2, hours=9)),
        (BASE_TIME + timedelta(hours=13), BASE_TIME + timedelta(days=3, hours=1)),
        (BASE_TIME + timedelta(days=1, hours=1), BASE_TIME + timedelta(days=1, hours=20)),
    ],
)
@pytest.mark.parametrize("page_size", [1, 4, 7])
async def test_every_page_number_holds_the_rows_at_its_offset_within_any_time_range(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    tenant: str,
    start: datetime | None,
    end: datetime | None,
    page_size: int,
) -> None:
    await insert_sessions(engine, tenant, _SPREAD)
    inside = [
        (key, at)
        for key, at in _SPREAD
        if (start is None or at >= start) and (end is None or at <= end)
    ]
    expected = newest_first(inside)
    fields: dict[str, Any] = {"page_size": page_size}
    if start is not None:
        fields["start_time"] = timestamp(start)
    if end is not None:
        fields["end_time"] = timestamp(end)

    pages = await walk_page_numbers(stub, tenant, **fields)

    assert [key for page in pages for key in ids(page)] == expected
    for page in pages:
        assert page.pagination.total == len(expected)
    past_the_end = await list_sessions(stub, tenant, page=len(pages) + 1, **fields)
    assert ids(past_the_end) == []
    assert past_the_end.pagination.total == len(expected)


# --- Page numbers -----------------------------------------------------------------------------


async def test_an_empty_request_returns_page_one_of_twenty(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 25)
    response = await list_sessions(stub, tenant)
    assert ids(response) == expected[:20]
    assert response.pagination == pb.Pagination(page=1, page_size=20, total=25, total_pages=2)
    assert response.next_page_token


async def test_page_zero_is_page_one(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 7)
    zero = await list_sessions(stub, tenant, page=0, page_size=3)
    one = await list_sessions(stub, tenant, page=1, page_size=3)
    assert ids(zero) == ids(one)
    assert zero.pagination == one.pagination
    assert zero.pagination.page == 1


async def test_page_numbers_cover_first_middle_and_partial_last_page(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 17)
    for number, rows in ((1, expected[0:5]), (2, expected[5:10]), (4, expected[15:17])):
        response = await list_sessions(stub, tenant, page=number, page_size=5)
        assert ids(response) == rows, number
        assert response.pagination == pb.Pagination(
            page=number, page_size=5, total=17, total_pages=4
        )
    last = await list_sessions(stub, tenant, page=4, page_size=5)
    assert last.next_page_token == ""


async def test_a_full_last_page_has_no_next_page_token(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 10)
    last = await list_sessions(stub, tenant, page=2, page_size=5)
    assert ids(last) == expected[5:]
    assert last.pagination.total_pages == 2
    assert last.next_page_token == ""


@pytest.mark.parametrize("page", [5, 6, 2**31 - 1])
async def test_a_page_past_the_end_is_empty_with_exact_totals_and_no_token(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, page: int
) -> None:
    await factory.sessions(tenant, 17)
    response = await list_sessions(stub, tenant, page=page, page_size=5)
    assert list(response.sessions) == []
    assert response.pagination == pb.Pagination(page=page, page_size=5, total=17, total_pages=4)
    assert response.next_page_token == ""


async def test_a_tenant_without_sessions_gets_an_empty_first_page(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    response = await list_sessions(stub, tenant)
    assert list(response.sessions) == []
    assert response.pagination == pb.Pagination(page=1, page_size=20, total=0, total_pages=0)
    assert response.next_page_token == ""


async def test_page_size_one_returns_one_session_per_page(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 3)
    for number in (1, 2, 3):
        response = await list_sessions(stub, tenant, page=number, page_size=1)
        assert ids(response) == [expected[number - 1]]
        assert response.pagination == pb.Pagination(
            page=number, page_size=1, total=3, total_pages=3
        )
        assert bool(response.next_page_token) == (number < 3)


async def test_page_size_one_hundred_is_the_maximum_and_is_honoured(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    rows = [(f"s-{i:05d}", BASE_TIME + timedelta(seconds=i)) for i in range(101)]
    await insert_sessions(engine, tenant, rows)
    expected = newest_first(rows)
    first = await list_sessions(stub, tenant, page_size=100)
    assert ids(first) == expected[:100]
    assert first.pagination == pb.Pagination(page=1, page_size=100, total=101, total_pages=2)
    second = await list_sessions(stub, tenant, page_token=first.next_page_token, page_size=100)
    assert ids(second) == expected[100:]
    assert second.next_page_token == ""


# --- Ordering ---------------------------------------------------------------------------------


async def test_sessions_sharing_a_created_time_are_ordered_by_session_id_descending(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    tie = BASE_TIME + timedelta(hours=1)
    rows = [(f"tie-{i:03d}", tie) for i in range(40)]
    rows += [("newer", tie + MICROSECOND), ("older", tie - MICROSECOND)]
    # Inserted in an order unrelated to the expected one, so insertion order cannot pass for it.
    rows = rows[::3] + rows[1::3] + rows[2::3]
    await insert_sessions(engine, tenant, rows)
    expected = ["newer", *[f"tie-{i:03d}" for i in reversed(range(40))], "older"]

    response = await list_sessions(stub, tenant, page_size=100)
    assert ids(response) == expected
    for page_size in (1, 3, 7):
        by_token = await walk_tokens(stub, tenant, page_size=page_size)
        assert [i for page in by_token for i in ids(page)] == expected, page_size
        by_number = await walk_page_numbers(stub, tenant, page_size=page_size)
        assert [i for page in by_number for i in ids(page)] == expected, page_size


# --- Page tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 7, 100])
async def test_following_page_tokens_visits_every_session_once_like_page_numbers(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str, page_size: int
) -> None:
    # Groups of three sessions share a created time, so pages often end inside a tie.
    rows = [(f"s-{i:05d}", BASE_TIME + timedelta(minutes=i // 3)) for i in range(137)]
    await insert_sessions(engine, tenant, rows)
    expected = newest_first(rows)
    total_pages = -(-137 // page_size)

    by_token = await walk_tokens(stub, tenant, page_size=page_size)
    by_number = await walk_page_numbers(stub, tenant, page_size=page_size)

    walked = [i for page in by_token for i in ids(page)]
    assert len(walked) == len(set(walked)) == 137
    assert walked == expected
    assert [ids(page) for page in by_token] == [ids(page) for page in by_number]
    assert len(by_token) == total_pages
    for number, page in enumerate(by_token, start=1):
        assert page.pagination == pb.Pagination(
            page=number, page_size=page_size, total=137, total_pages=total_pages
        )
    assert by_token[-1].next_page_token == ""
    assert by_number[-1].next_page_token == ""


async def test_next_page_token_is_returned_on_page_number_calls_and_continues_after_them(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 17)
    second = await list_sessions(stub, tenant, page=2, page_size=5)
    assert second.next_page_token
    third_by_token = await list_sessions(
        stub, tenant, page_token=second.next_page_token, page_size=5
    )
    third_by_number = await list_sessions(stub, tenant, page=3, page_size=5)
    assert ids(third_by_token) == ids(third_by_number)
    assert third_by_token.pagination == third_by_number.pagination
    assert third_by_token.pagination.page == 3
    fourth = await list_sessions(
        stub, tenant, page_token=third_by_token.next_page_token, page_size=5
    )
    assert ids(fourth) == ids(await list_sessions(stub, tenant, page=4, page_size=5))
    assert fourth.next_page_token == ""


async def test_a_page_token_continues_after_its_row_when_newer_sessions_arrive(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str
) -> None:
    rows = [(f"s-{i:05d}", BASE_TIME + timedelta(minutes=i)) for i in range(10)]
    await insert_sessions(engine, tenant, rows)
    expected = newest_first(rows)
    first = await list_sessions(stub, tenant, page_size=4)
    assert ids(first) == expected[:4]

    newer = [(f"n-{i:05d}", BASE_TIME + timedelta(days=1, minutes=i)) for i in range(5)]
    await insert_sessions(engine, tenant, newer)

    second = await list_sessions(stub, tenant, page_token=first.next_page_token, page_size=4)
    assert ids(second) == expected[4:8]
    assert second.pagination.page == 2
    assert second.pagination.total == 15
    third = await list_sessions(stub, tenant, page_token=second.next_page_token, page_size=4)
    assert ids(third) == expected[8:]
    assert third.next_page_token == ""
    # By position the same page now shows rows the caller has already seen.
    assert ids(await list_sessions(stub, tenant, page=2, page_size=4)) != expected[4:8]


async def test_a_page_token_can_be_replayed_with_the_same_result(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 9)
    first = await list_sessions(stub, tenant, page_size=4)
    again = await list_sessions(stub, tenant, page_token=first.next_page_token, page_size=4)
    once_more = await list_sessions(stub, tenant, page_token=first.next_page_token, page_size=4)
    # The watch token moves with any writer's change anywhere (here: other tests'); the page not.
    again.ClearField("watch_token")
    once_more.ClearField("watch_token")
    assert again == once_more


async def test_a_page_token_is_refused_with_other_filters_or_tenant_saying_which(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    window = {
        "start_time": timestamp(BASE_TIME),
        "end_time": timestamp(BASE_TIME + timedelta(days=1)),
    }
    issued: dict[str, Any] = {
        "status": pb.SESSION_STATUS_ACTIVE,
        "channel_type": "web",
        "page_size": 2,
        **window,
    }
    await factory.sessions(tenant, 6)
    token = (await list_sessions(stub, tenant, **issued)).next_page_token
    assert token
    # The same query accepts it: the refusals below are about what changed, not the token.
    assert len((await list_sessions(stub, tenant, page_token=token, **issued)).sessions) == 2

    def changed(**overrides: Any) -> dict[str, Any]:
        return {**{k: v for k, v in issued.items() if k not in overrides}, **overrides}

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in issued.items() if k != name}

    variants: dict[str, dict[str, Any]] = {
        "other status": changed(status=pb.SESSION_STATUS_CLOSED),
        "no status": without("status"),
        "other channel": changed(channel_type="whatsapp"),
        "no channel": without("channel_type"),
        "other start": changed(start_time=timestamp(BASE_TIME - MICROSECOND)),
        "no start": without("start_time"),
        "other end": changed(end_time=timestamp(BASE_TIME + timedelta(days=2))),
        "no end": without("end_time"),
    }
    for name, fields in variants.items():
        description = await page_token_refusal(stub, tenant, page_token=token, **fields)
        assert description == page_tokens.OTHER_FILTERS, name
    assert page_tokens.OTHER_FILTERS.startswith("was issued for other filters: status, start_time")

    intruder = other_tenant()
    await factory.sessions(intruder, 6)
    description = await page_token_refusal(stub, intruder, page_token=token, **issued)
    assert description == page_tokens.OTHER_TENANT == "was issued for another tenant"


async def test_a_page_token_is_accepted_with_another_page_size_and_continues_after_its_row(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 12)
    issued: dict[str, Any] = {"status": pb.SESSION_STATUS_ACTIVE, "page_size": 2}
    token = (await list_sessions(stub, tenant, **issued)).next_page_token
    # AIP-158: only the filters and the tenant must match. Offset 2 is on page 3 at size 1,
    # page 1 at the default 20.
    for page_size, page in ((3, 1), (1, 3), (2, 2), (0, 1), (100, 1)):
        fields = {**issued, "page_size": page_size}
        response = await list_sessions(stub, tenant, page_token=token, **fields)
        size = page_size or 20
        assert ids(response) == expected[2 : 2 + size], page_size
        assert response.pagination == pb.Pagination(
            page=page, page_size=size, total=12, total_pages=-(-12 // size)
        ), page_size


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([10, 3, 3, 7, 1, 100], id="shrinking-then-growing"),
        pytest.param([1, 2, 5, 5, 100], id="growing"),
        pytest.param([7, 7, 20, 1, 1, 7, 3], id="misaligned"),
    ],
)
async def test_changing_page_size_mid_walk_visits_every_session_once_in_order(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, tenant: str, sizes: list[int]
) -> None:
    # Groups of three sessions share a created time, so pages often end inside a tie.
    rows = [(f"s-{i:05d}", BASE_TIME + timedelta(minutes=i // 3)) for i in range(137)]
    await insert_sessions(engine, tenant, rows)
    expected = newest_first(rows)

    walked: list[str] = []
    token = ""
    calls = 0
    while True:
        size = sizes[min(calls, len(sizes) - 1)]  # the last size until the walk ends
        response = await list_sessions(stub, tenant, page_size=size, page_token=token)
        offset = len(walked)
        assert ids(response) == expected[offset : offset + size], (calls, size)
        # The page, at this size, that holds the reply's first row.
        assert response.pagination == pb.Pagination(
            page=offset // size + 1, page_size=size, total=137, total_pages=-(-137 // size)
        ), (calls, size)
        if offset % size == 0:  # aligned: the very page a page number reaches
            by_number = await list_sessions(stub, tenant, page=offset // size + 1, page_size=size)
            assert ids(by_number) == ids(response)
        walked.extend(ids(response))
        calls += 1
        token = response.next_page_token
        if not token:
            break
        assert calls < 200, "next_page_token never ran out"
    assert walked == expected
    assert len(set(walked)) == 137


async def test_page_numbers_after_a_page_size_change_are_the_page_of_the_first_row(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 40)
    first = await list_sessions(stub, tenant, page_size=10)
    assert first.pagination.page == 1
    # Rows 10-12 (0-based): page 4 at 3 per page holds row 10 (pages of 3: 9-11).
    second = await list_sessions(stub, tenant, page_size=3, page_token=first.next_page_token)
    assert ids(second) == expected[10:13]
    assert (second.pagination.page, second.pagination.total_pages) == (4, 14)
    # Rows 13-27: page 1 at 15 per page holds row 13.
    third = await list_sessions(stub, tenant, page_size=15, page_token=second.next_page_token)
    assert ids(third) == expected[13:28]
    assert (third.pagination.page, third.pagination.total_pages) == (1, 3)
    # Rows 28-39: at 4 per page, row 28 opens page 8, the same page as by number.
    fourth = await list_sessions(stub, tenant, page_size=4, page_token=third.next_page_token)
    assert ids(fourth) == expected[28:32]
    assert fourth.pagination.page == 8
    assert ids(await list_sessions(stub, tenant, page=8, page_size=4)) == ids(fourth)


async def test_a_page_token_of_the_previous_release_says_to_start_again(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    expected = await factory.sessions(tenant, 6)
    # What version 2 returned after the first page of 2: the last row's key, page number 2.
    filters = SessionFilters(None, None, None, None)
    old = forged_tokens.version_two(
        kind=forged_tokens.KIND_SESSIONS,
        scope=(tenant, filters, 2),
        micros=key_of(BASE_TIME + timedelta(minutes=4)),
        page=2,
        key=expected[1],
    )
    description = await page_token_refusal(stub, tenant, page_token=old, page_size=2)
    assert description == page_tokens.OLDER_VERSION
    assert "older version" in description
    assert "start again from the first page" in description


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "!!!", "AAAA", "A" * 2000, "c2Vzc2lvbnM"],
    ids=["words", "not-base64", "too-short", "too-long", "plain-text"],
)
async def test_a_corrupt_page_token_is_an_invalid_page_token(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, token: str
) -> None:
    description = await page_token_refusal(stub, tenant, page_token=token)
    assert description == page_tokens.NOT_A_PAGE_TOKEN == "is not a page token"


async def test_a_message_page_token_is_not_a_session_page_token(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "chat")
    for _ in range(3):
        await factory.message(tenant, "chat")
    detail = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="chat", page_size=1),
        metadata=tenant_metadata(tenant),
    )
    assert detail.next_page_token
    description = await page_token_refusal(stub, tenant, page_token=detail.next_page_token)
    assert description == page_tokens.OTHER_METHOD == "is a page token of another method"


@pytest.mark.parametrize("page", [1, 2])
async def test_a_page_number_together_with_a_page_token_is_refused(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, page: int
) -> None:
    await factory.sessions(tenant, 5)
    token = (await list_sessions(stub, tenant, page_size=2)).next_page_token
    await expect_invalid(stub, tenant, "page", page=page, page_token=token, page_size=2)


async def test_list_sessions_never_returns_another_tenants_sessions(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    neighbour = other_tenant()
    mine = await factory.sessions(tenant, 4)
    await factory.sessions(neighbour, 9, start=BASE_TIME + timedelta(hours=1))
    response = await list_sessions(stub, tenant, page_size=100)
    assert ids(response) == mine
    assert {s.tenant_id for s in response.sessions} == {tenant}
    assert response.pagination.total == 4
