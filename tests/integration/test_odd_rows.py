"""Rows other services wrote in odd shapes, read and updated through all three RPCs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.transport import errors
from server.transport.jsonvalue import MAX_DEPTH, TRUNCATED
from tests.factories import BASE_TIME, Factory, dumps, tenant_metadata
from tests.helpers import failure

SESSION_ID = "odd"
HUGE_DIGITS = "1" + "0" * 4999
END_TIME = "2026-01-02T03:04:05Z"


async def listed(stub: pb_grpc.SessionMonitoringStub, tenant: str, **filters: Any) -> pb.Session:
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(**filters), metadata=tenant_metadata(tenant)
    )
    [session] = [s for s in response.sessions if s.session_id == SESSION_ID]
    assert response.pagination.total == len(response.sessions)
    return session


async def detail(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, **fields: Any
) -> pb.GetSessionDetailResponse:
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id=SESSION_ID, **fields),
        metadata=tenant_metadata(tenant),
    )
    return response


async def update(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, status: pb.SessionStatus
) -> pb.Session:
    response: pb.UpdateSessionStatusResponse = await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id=SESSION_ID, status=status),
        metadata=tenant_metadata(tenant),
    )
    return response.session


def as_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"next": value}
    return value


def struct_depth(value: struct_pb2.Value | struct_pb2.Struct) -> tuple[int, Any]:
    """How many `next` levels a nested Struct keeps, and what it ends with."""
    depth = 0
    current: Any = value
    while True:
        if isinstance(current, struct_pb2.Value):
            if current.WhichOneof("kind") != "struct_value":
                return depth, json_format.MessageToDict(current)
            current = current.struct_value
        if "next" not in current.fields:
            return depth, json_format.MessageToDict(current)
        current = current.fields["next"]
        depth += 1


# --- Session metadata of every shape ----------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Stored metadata (JSON text; None = SQL NULL) and what each RPC must make of it."""

    json_text: str | None
    status: pb.SessionStatus
    raw_status: str
    end_time: bool
    struct: dict[str, Any]
    update_to: pb.SessionStatus
    # None: the update is refused with SESSION_METADATA_NOT_OBJECT.
    stored_after: dict[str, Any] | None


SHAPES = {
    "sql-null": Shape(
        None,
        pb.SESSION_STATUS_ACTIVE,
        "",
        False,
        {},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed"},
    ),
    "json-null": Shape(
        "null",
        pb.SESSION_STATUS_ACTIVE,
        "",
        False,
        {},
        pb.SESSION_STATUS_CLOSED,
        # The API documents null metadata as an empty object, whichever null it is.
        {"status": "closed"},
    ),
    "json-array": Shape(
        dumps([{"status": "closed"}, 1]),
        pb.SESSION_STATUS_ACTIVE,
        "",
        False,
        {},
        pb.SESSION_STATUS_CLOSED,
        None,
    ),
    "json-string": Shape(
        dumps("closed"), pb.SESSION_STATUS_ACTIVE, "", False, {}, pb.SESSION_STATUS_EXPIRED, None
    ),
    "json-number": Shape(
        "42", pb.SESSION_STATUS_ACTIVE, "", False, {}, pb.SESSION_STATUS_CLOSED, None
    ),
    "json-boolean": Shape(
        "true", pb.SESSION_STATUS_ACTIVE, "", False, {}, pb.SESSION_STATUS_CLOSED, None
    ),
    "status-42": Shape(
        dumps({"status": 42}),
        pb.SESSION_STATUS_UNSPECIFIED,
        "42",
        False,
        {"status": 42.0},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed"},
    ),
    "status-pending": Shape(
        dumps({"status": "pending", "endTime": END_TIME}),
        pb.SESSION_STATUS_UNSPECIFIED,
        "pending",
        # endTime only counts for closed and expired sessions.
        False,
        {"status": "pending", "endTime": END_TIME},
        pb.SESSION_STATUS_EXPIRED,
        {"status": "expired"},
    ),
    "status-json-null": Shape(
        dumps({"status": None}),
        pb.SESSION_STATUS_ACTIVE,
        "",
        False,
        {"status": None},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed"},
    ),
    "status-object": Shape(
        dumps({"status": {"code": 1}}),
        pb.SESSION_STATUS_UNSPECIFIED,
        '{"code": 1}',
        False,
        {"status": {"code": 1.0}},
        pb.SESSION_STATUS_ACTIVE,
        {"status": "active"},
    ),
    "status-case": Shape(
        dumps({"status": "Closed"}),
        pb.SESSION_STATUS_UNSPECIFIED,
        "Closed",
        False,
        {"status": "Closed"},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed"},
    ),
    "end-time-unparseable": Shape(
        dumps({"status": "closed", "endTime": "yesterday"}),
        pb.SESSION_STATUS_CLOSED,
        "",
        False,
        {"status": "closed", "endTime": "yesterday"},
        # Moving between terminal statuses keeps the stored endTime as it is.
        pb.SESSION_STATUS_EXPIRED,
        {"status": "expired", "endTime": "yesterday"},
    ),
    "end-time-number": Shape(
        dumps({"status": "expired", "endTime": 1767225600}),
        pb.SESSION_STATUS_EXPIRED,
        "",
        False,
        {"status": "expired", "endTime": 1767225600.0},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed", "endTime": 1767225600},
    ),
    "end-time-naive": Shape(
        dumps({"status": "closed", "endTime": "2026-01-02T03:04:05"}),
        pb.SESSION_STATUS_CLOSED,
        "",
        True,
        {"status": "closed", "endTime": "2026-01-02T03:04:05"},
        pb.SESSION_STATUS_ACTIVE,
        {"status": "active"},
    ),
    "huge-integer": Shape(
        f'{{"status": "closed", "endTime": "{END_TIME}", "visits": {HUGE_DIGITS}}}',
        pb.SESSION_STATUS_CLOSED,
        "",
        True,
        {"status": "closed", "endTime": END_TIME, "visits": HUGE_DIGITS},
        pb.SESSION_STATUS_EXPIRED,
        {"status": "expired", "endTime": END_TIME, "visits": HUGE_DIGITS},
    ),
    "huge-integer-status": Shape(
        f'{{"status": {HUGE_DIGITS}}}',
        pb.SESSION_STATUS_UNSPECIFIED,
        HUGE_DIGITS,
        False,
        {"status": HUGE_DIGITS},
        pb.SESSION_STATUS_CLOSED,
        {"status": "closed"},
    ),
    "huge-float": Shape(
        dumps({"status": "active", "ratio": 1e308}),
        pb.SESSION_STATUS_ACTIVE,
        "",
        False,
        {"status": "active", "ratio": 1e308},
        pb.SESSION_STATUS_CLOSED,
        # PostgreSQL stores the number exactly; it reads back as the integer it equals.
        {"status": "closed", "ratio": 10**308},
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
async def test_odd_session_metadata_is_listed_detailed_and_updated_as_documented(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, shape: Shape
) -> None:
    await factory.session(tenant, SESSION_ID)
    if shape.json_text is not None:
        await factory.raw_metadata_sql(tenant, SESSION_ID, shape.json_text)
    stored_before = await factory.metadata(tenant, SESSION_ID)

    for session in (await listed(stub, tenant), (await detail(stub, tenant)).session):
        assert session.tenant_id == tenant
        assert (session.status, session.raw_status) == (shape.status, shape.raw_status)
        assert session.HasField("end_time") == shape.end_time
    assert as_dict((await detail(stub, tenant)).metadata) == shape.struct
    if shape.status != pb.SESSION_STATUS_UNSPECIFIED:
        # The SQL status filter and the displayed status agree on odd shapes too.
        await listed(stub, tenant, status=shape.status)

    if shape.stored_after is None:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await update(stub, tenant, shape.update_to)
        result = failure(raised.value)
        assert result.code == grpc.StatusCode.FAILED_PRECONDITION
        assert result.reason == errors.REASON_SESSION_METADATA_NOT_OBJECT
        assert await factory.metadata(tenant, SESSION_ID) == stored_before
        return

    updated = await update(stub, tenant, shape.update_to)
    assert updated.status == shape.update_to
    assert updated.raw_status == ""
    stored = await factory.metadata(tenant, SESSION_ID)
    assert isinstance(stored, dict)
    if shape.update_to != pb.SESSION_STATUS_ACTIVE and "endTime" not in shape.stored_after:
        # A fresh stamp: its value is the server's clock, so only its presence is compared.
        assert isinstance(stored.pop("endTime"), str)
        assert updated.HasField("end_time")
    assert stored == shape.stored_after
    assert (await listed(stub, tenant)).status == shape.update_to
    assert (await detail(stub, tenant)).session == updated


# --- Odd columns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("infinity", "9999-12-31T23:59:59.999999Z"),
        ("20000-01-01 00:00:00Z", "9999-12-31T23:59:59.999999Z"),
        ("-infinity", "0001-01-01T00:00:00Z"),
        ("0100-01-01 00:00:00Z BC", "0001-01-01T00:00:00Z"),
    ],
)
async def test_times_stored_outside_the_timestamp_range_are_shown_at_its_ends(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    factory: Factory,
    tenant: str,
    stored: str,
    shown: str,
) -> None:
    await factory.session(tenant, SESSION_ID)
    await factory.message(tenant, SESSION_ID, content="hello")
    async with engine.begin() as conn:
        # CAST via text: the stored text as PostgreSQL itself parses it.
        for statement in (
            "UPDATE chat_sessions SET created_at = CAST(CAST(:t AS text) AS timestamptz),"
            " updated_at = CAST(CAST(:t AS text) AS timestamptz)",
            "UPDATE chat_messages SET created_at = CAST(CAST(:t AS text) AS timestamptz)",
        ):
            await conn.execute(
                text(statement + " WHERE tenant_id = :tenant"), {"t": stored, "tenant": tenant}
            )

    session = (await detail(stub, tenant)).session
    message = (await detail(stub, tenant)).messages[0]
    for stamp in (session.start_time, session.update_time, message.create_time):
        assert stamp.ToJsonString() == shown
    assert (await listed(stub, tenant)).start_time.ToJsonString() == shown
    assert (await update(stub, tenant, pb.SESSION_STATUS_CLOSED)).start_time.ToJsonString() == shown


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z"),
    ],
)
async def test_an_end_time_outside_the_timestamp_range_in_utc_is_clamped_in_every_rpc(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, stored: str, shown: str
) -> None:
    await factory.session(tenant, SESSION_ID, metadata={"status": "closed", "endTime": stored})
    assert (await listed(stub, tenant)).end_time.ToJsonString() == shown
    assert (await detail(stub, tenant)).session.end_time.ToJsonString() == shown
    # closed to expired keeps the stored endTime: the update commits, and its reply converts it.
    updated = await update(stub, tenant, pb.SESSION_STATUS_EXPIRED)
    assert updated.end_time.ToJsonString() == shown
    assert (await factory.metadata(tenant, SESSION_ID))["endTime"] == stored


async def test_a_session_with_a_null_channel_type_has_no_channel_in_every_rpc(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, SESSION_ID, channel_type=None)

    listed_session = await listed(stub, tenant)
    detailed = (await detail(stub, tenant)).session
    updated = await update(stub, tenant, pb.SESSION_STATUS_CLOSED)

    for session in (listed_session, detailed, updated):
        assert not session.HasField("channel_type")
    # A channel filter never matches the unknown channel, even the empty one.
    for channel in ("", "web"):
        response = await stub.ListSessions(
            pb.ListSessionsRequest(channel_type=channel), metadata=tenant_metadata(tenant)
        )
        assert list(response.sessions) == []


async def test_a_message_with_null_role_and_content_is_empty_in_detail_and_counted_everywhere(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, SESSION_ID)
    blank = await factory.message(
        tenant, SESSION_ID, role=None, content=None, metadata={"retrieval": [{"content": "x"}]}
    )

    response = await detail(stub, tenant)
    assert [(m.id, m.role, m.content) for m in response.messages] == [(blank, "", "")]
    # Only assistant messages feed the trace; a message without a role is not one.
    assert response.trace == pb.Trace()
    assert (await listed(stub, tenant)).message_count == 1
    assert (await update(stub, tenant, pb.SESSION_STATUS_EXPIRED)).message_count == 1


# --- Deep and huge JSON -----------------------------------------------------------------------


async def test_session_metadata_nested_five_hundred_levels_is_truncated_and_still_answers(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, SESSION_ID, metadata={"status": "closed", "tree": nested(500, 1)})

    response = await detail(stub, tenant)

    assert response.session.status == pb.SESSION_STATUS_CLOSED
    depth, leaf = struct_depth(response.metadata.fields["tree"])
    assert leaf == TRUNCATED
    assert 0 < depth <= MAX_DEPTH
    assert (await listed(stub, tenant)).status == pb.SESSION_STATUS_CLOSED
    assert (await update(stub, tenant, pb.SESSION_STATUS_ACTIVE)).status == pb.SESSION_STATUS_ACTIVE
    stored = await factory.metadata(tenant, SESSION_ID)
    assert stored["tree"] == nested(500, 1)


async def test_assistant_metadata_nested_five_hundred_levels_is_truncated_and_still_answers(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, SESSION_ID)
    message_id = await factory.message(
        tenant,
        SESSION_ID,
        role="assistant",
        content="deep",
        metadata={
            "retrieval": [{"source": "kb", "content": "c", "extra": nested(500, "x")}],
            "tool_calls": [
                {
                    "id": "call-1",
                    "name": "deep",
                    "arguments": nested(500, "x"),
                    "result": nested(500, "x"),
                    "status": "ok",
                }
            ],
            "error": nested(500, "x"),
        },
    )

    response = await detail(stub, tenant)

    # grpc.aio hands back None (and logs) when it cannot decode a response, e.g. one nested past
    # protobuf's decoding depth limit of 100 messages.
    assert response is not None, "the client could not decode the response"
    [hit] = response.trace.retrieval
    assert (hit.message_id, hit.source, hit.content) == (message_id, "kb", "c")
    [tool] = response.trace.tools
    assert (tool.message_id, tool.name, tool.status) == (message_id, "deep", pb.TOOL_CALL_STATUS_OK)
    for tree in (tool.arguments, tool.result):
        depth, leaf = struct_depth(tree)
        assert leaf == TRUNCATED
        assert 0 < depth <= MAX_DEPTH
    # An `error` object without code or message says nothing and is skipped.
    assert list(response.trace.errors) == []
    assert (await listed(stub, tenant)).message_count == 1
    assert (await update(stub, tenant, pb.SESSION_STATUS_CLOSED)).message_count == 1


async def test_a_two_megabyte_retrieval_hit_and_a_one_megabyte_message_fit_one_response(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    # Together about 3 MiB: under the client's default 4 MiB receive limit.
    retrieved = "r" * (2 * 1024 * 1024)
    content = "\u00e9" * (512 * 1024)
    await factory.session(tenant, SESSION_ID, metadata={"status": "expired", "endTime": END_TIME})
    message_id = await factory.message(
        tenant,
        SESSION_ID,
        role="assistant",
        content=content,
        metadata={"retrieval": [{"source": "kb", "document_id": "d", "content": retrieved}]},
    )

    response = await detail(stub, tenant)

    assert [(m.id, len(m.content)) for m in response.messages] == [(message_id, len(content))]
    assert response.messages[0].content == content
    [hit] = response.trace.retrieval
    assert hit.content == retrieved
    assert response.ByteSize() < 4 * 1024 * 1024
    assert (await listed(stub, tenant)).status == pb.SESSION_STATUS_EXPIRED
    assert (await update(stub, tenant, pb.SESSION_STATUS_CLOSED)).end_time == (
        response.session.end_time
    )


async def test_a_page_of_one_message_reads_each_of_several_big_messages(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    # Three 1.5 MB messages exceed 4 MiB together; one per page stays readable.
    big = ["m" * (1536 * 1024), "n" * (1536 * 1024), "o" * (1536 * 1024)]
    await factory.session(tenant, SESSION_ID)
    for index, content in enumerate(big):
        await factory.message(
            tenant, SESSION_ID, content=content, created_at=BASE_TIME + timedelta(seconds=index)
        )

    seen: list[str] = []
    token = ""
    while True:
        response = await detail(stub, tenant, page_size=1, page_token=token)
        seen.extend(m.content for m in response.messages)
        token = response.next_page_token
        if not token:
            break
    assert seen == big
    assert (await listed(stub, tenant)).message_count == len(big)


async def test_session_metadata_keys_that_are_odd_text_come_back_verbatim(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    odd = {"": "empty key", "\u202eevil": "rtl", "emoji \U0001f600": ["\u0001"], "a.b": {"": None}}
    await factory.session(tenant, SESSION_ID)
    await factory.raw_metadata_sql(tenant, SESSION_ID, json.dumps(odd))

    response = await detail(stub, tenant)

    assert as_dict(response.metadata) == odd
    assert (await update(stub, tenant, pb.SESSION_STATUS_CLOSED)).status == pb.SESSION_STATUS_CLOSED
    stored = await factory.metadata(tenant, SESSION_ID)
    assert {k: v for k, v in stored.items() if k not in ("status", "endTime")} == odd


@pytest.mark.parametrize(
    ("counter", "total"),
    [
        (3_000_000_000, 3_000_000_001),  # past int32: the wire type is int64
        (-100, 0),  # drifted below zero: shown as none
        (9_000_000_000_000_000_000, 2**63 - 1),  # two of them would overflow BIGINT
    ],
)
async def test_counters_past_int32_or_drifted_never_fail_a_call(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    factory: Factory,
    tenant: str,
    counter: int,
    total: int,
) -> None:
    await factory.session(tenant, SESSION_ID)
    await factory.message(tenant, SESSION_ID)
    async with engine.begin() as conn:
        # As a bypassed trigger or a hand edit would leave them (check-counts repairs it).
        for day in ("2020-01-01", "2020-01-02"):
            await conn.execute(
                text(
                    "INSERT INTO chat_session_counts (tenant_id, day, status, channel_type, n) "
                    "VALUES (:t, CAST(CAST(:day AS text) AS date), 'active', 'web', :n)"
                ),
                {"t": tenant, "day": day, "n": counter // 2 if total < 2**63 - 1 else counter},
            )
        await conn.execute(
            text(
                "INSERT INTO chat_message_count_deltas (tenant_id, session_id, n) "
                "VALUES (:t, :s, :n), (:t, :s, :n)"
            ),
            {"t": tenant, "s": SESSION_ID, "n": counter},
        )
    reply = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(tenant))
    assert reply.pagination.total == total
    assert reply.pagination.total_pages == -(-total // reply.pagination.page_size)
    expected_messages = min(max(1 + 2 * counter, 0), 2**63 - 1)
    assert reply.sessions[0].message_count == expected_messages
    assert (await detail(stub, tenant)).session.message_count == expected_messages
    updated = await update(stub, tenant, pb.SESSION_STATUS_CLOSED)
    assert updated.message_count == expected_messages
    deep = await stub.ListSessions(
        pb.ListSessionsRequest(page=3, page_size=1), metadata=tenant_metadata(tenant)
    )
    assert deep.pagination.total >= 0


_ODD_TIMES = (
    "infinity",
    "infinity",
    "20000-01-01 00:00:00Z",
    "20000-01-01 00:00:00Z",
    "9999-12-31 23:59:59.999999Z",
    "2026-01-01 00:00:00Z",
    "0001-01-01 00:00:00Z",
    "0100-01-01 00:00:00Z BC",
    "-infinity",
    "-infinity",
)


@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_paging_by_token_visits_rows_stored_at_odd_times_once_each_in_order(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    factory: Factory,
    tenant: str,
    page_size: int,
) -> None:
    # Two rows at each odd time, so the tie-break decides within it; ids chosen so that sort
    # order by id differs from insertion order.
    sessions = [f"s-{index:02d}" for index in range(len(_ODD_TIMES))]
    async with engine.begin() as conn:
        for session, stored in zip(sessions, _ODD_TIMES, strict=True):
            await conn.execute(
                text(
                    "INSERT INTO chat_sessions (tenant_id, session_id, created_at) "
                    "VALUES (:t, :s, CAST(CAST(:at AS text) AS timestamptz))"
                ),
                {"t": tenant, "s": session, "at": stored},
            )
            await conn.execute(
                text(
                    "INSERT INTO chat_messages (tenant_id, session_id, created_at) "
                    "VALUES (:t, :first, CAST(CAST(:at AS text) AS timestamptz))"
                ),
                {"t": tenant, "first": sessions[0], "at": stored},
            )
        newest_first = [
            row.session_id
            for row in await conn.execute(
                text(
                    "SELECT session_id FROM chat_sessions WHERE tenant_id = :t "
                    "ORDER BY created_at DESC, session_id DESC"
                ),
                {"t": tenant},
            )
        ]
        oldest_first = [
            row.id
            for row in await conn.execute(
                text("SELECT id FROM chat_messages WHERE tenant_id = :t ORDER BY created_at, id"),
                {"t": tenant},
            )
        ]
    metadata = tenant_metadata(tenant)
    listed_pages = await _pages(
        lambda request: stub.ListSessions(request, metadata=metadata),
        pb.ListSessionsRequest(page_size=page_size),
    )
    assert [s.session_id for page in listed_pages for s in page.sessions] == newest_first
    detail_pages = await _pages(
        lambda request: stub.GetSessionDetail(request, metadata=metadata),
        pb.GetSessionDetailRequest(session_id=sessions[0], page_size=page_size),
    )
    assert [m.id for page in detail_pages for m in page.messages] == oldest_first


async def _pages(call: Callable[[Any], Awaitable[Any]], request: Any) -> list[Any]:
    """Every page of a paged call, following next_page_token (bounded, so a loop fails)."""
    pages = []
    for _ in range(100):
        page = await call(request)
        pages.append(page)
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token
    raise AssertionError("paging did not end")


async def test_a_message_past_the_receive_limit_is_cut_to_fit_and_paging_moves_past_it(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, grpc_target: str, tenant: str
) -> None:
    content = "\u4e2d" * (2 * 1024 * 1024)  # 6 MiB of UTF-8: past a default client's 4 MiB
    await factory.session(tenant, SESSION_ID)
    big = await factory.message(tenant, SESSION_ID, content=content, created_at=BASE_TIME)
    after = await factory.message(
        tenant, SESSION_ID, content="next", created_at=BASE_TIME + timedelta(seconds=1)
    )
    first = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id=SESSION_ID, page_size=10),
        metadata=tenant_metadata(tenant),
    )
    [message] = first.messages
    assert message.id == big
    assert message.content_truncated
    assert message.content_bytes == len(content.encode())
    assert content.startswith(message.content)
    assert len(message.content) > 1024 * 1024  # cut to what fits, not to nothing
    assert first.ByteSize() < 4 * 1024 * 1024
    second = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(
            session_id=SESSION_ID, page_size=10, page_token=first.next_page_token
        ),
        metadata=tenant_metadata(tenant),
    )
    assert [(m.id, m.content, m.content_truncated) for m in second.messages] == [
        (after, "next", False)
    ]
    # The whole text, for a caller that raised its receive limit.
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(grpc_target, options=options) as channel:
        whole = await pb_grpc.SessionMonitoringStub(channel).GetSessionDetail(
            pb.GetSessionDetailRequest(session_id=SESSION_ID, page_size=1, full_content=True),
            metadata=tenant_metadata(tenant),
        )
    assert whole.messages[0].content == content
    assert not whole.messages[0].content_truncated


async def test_session_metadata_past_the_receive_limit_is_left_out_and_flagged(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(
        tenant, SESSION_ID, metadata={"status": "closed", "blob": "x" * 5_000_000}
    )
    await factory.message(tenant, SESSION_ID, content="hi")
    reply = await detail(stub, tenant)
    assert reply.metadata_truncated
    assert reply.metadata == struct_pb2.Struct()
    assert reply.session.status == pb.SESSION_STATUS_CLOSED
    assert [m.content for m in reply.messages] == ["hi"]
    assert (await listed(stub, tenant)).session_id == SESSION_ID
    assert (await update(stub, tenant, pb.SESSION_STATUS_ACTIVE)).status == pb.SESSION_STATUS_ACTIVE


async def test_trace_entries_past_the_receive_limit_are_left_out_and_flagged(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, SESSION_ID)
    await factory.message(
        tenant,
        SESSION_ID,
        role="assistant",
        content="answer",
        metadata={"retrieval": [{"source": "kb", "content": "r" * (5 * 1024 * 1024)}]},
    )
    reply = await detail(stub, tenant)
    assert reply.trace_truncated
    assert list(reply.trace.retrieval) == []
    assert [(m.content, m.content_truncated) for m in reply.messages] == [("answer", False)]
    assert reply.ByteSize() < 4 * 1024 * 1024
