"""GetSessionDetail over a real channel: lookup, message order and paging, trace and metadata."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.schema import messages_table
from server.domain.time_keys import key_of
from server.transport import errors, page_tokens
from tests import forged_tokens
from tests.factories import BASE_TIME, Factory, dumps, tenant_metadata
from tests.helpers import failure


async def _detail(
    stub: pb_grpc.SessionMonitoringStub,
    tenant: str,
    session_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
) -> pb.GetSessionDetailResponse:
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(
            session_id=session_id, page_size=page_size, page_token=page_token
        ),
        metadata=tenant_metadata(tenant),
    )
    return response


async def _insert_messages(engine: AsyncEngine, tenant: str, session_id: str, count: int) -> None:
    """Bulk-insert `count` messages; every three share a created_at so ties need the id."""
    rows = [
        {
            "tenant_id": tenant,
            "session_id": session_id,
            "role": "user" if index % 2 == 0 else "assistant",
            "content": f"message {index}",
            "created_at": BASE_TIME + timedelta(seconds=index // 3),
        }
        for index in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(messages_table), rows)


async def _stored_message_ids(engine: AsyncEngine, tenant: str, session_id: str) -> list[int]:
    """The session's message ids in the documented order, as PostgreSQL sorts them."""
    async with engine.connect() as conn:
        result = await conn.execute(
            select(messages_table.c.id)
            .where(
                messages_table.c.tenant_id == tenant,
                messages_table.c.session_id == session_id,
            )
            .order_by(messages_table.c.created_at, messages_table.c.id)
        )
        return [int(row_id) for row_id in result.scalars()]


async def test_unknown_session_id_is_not_found_with_reason(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _detail(stub, tenant, "no-such-session")
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert result.reason == errors.REASON_SESSION_NOT_FOUND


async def test_another_tenants_session_is_not_found_for_the_caller(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "shared-id")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _detail(stub, f"{tenant}-other", "shared-id")
    assert failure(raised.value).reason == errors.REASON_SESSION_NOT_FOUND


async def test_messages_come_oldest_first_with_ties_on_created_at_broken_by_id(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    late = await factory.message(tenant, "s", content="late", created_at=BASE_TIME + timedelta(2))
    tie_a = await factory.message(tenant, "s", content="tie a", created_at=BASE_TIME)
    tie_b = await factory.message(tenant, "s", content="tie b", created_at=BASE_TIME)
    early = await factory.message(
        tenant, "s", content="early", created_at=BASE_TIME - timedelta(days=1)
    )
    response = await _detail(stub, tenant, "s")
    assert [m.id for m in response.messages] == [early, tie_a, tie_b, late]
    assert [m.content for m in response.messages] == ["early", "tie a", "tie b", "late"]
    assert response.messages[0].create_time.ToDatetime(UTC) == BASE_TIME - timedelta(days=1)
    assert response.session.message_count == 4
    assert response.next_page_token == ""


async def test_page_size_zero_returns_the_first_hundred_messages(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s")
    await _insert_messages(engine, tenant, "s", 150)
    expected = await _stored_message_ids(engine, tenant, "s")
    response = await _detail(stub, tenant, "s")
    assert [m.id for m in response.messages] == expected[:100]
    assert response.next_page_token != ""
    assert response.session.message_count == 150


async def test_page_tokens_walk_all_messages_without_duplicates_or_gaps(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s")
    await _insert_messages(engine, tenant, "s", 250)
    expected = await _stored_message_ids(engine, tenant, "s")
    seen: list[int] = []
    page_sizes: list[int] = []
    token = ""
    while True:
        response = await _detail(stub, tenant, "s", page_size=40, page_token=token)
        seen.extend(m.id for m in response.messages)
        page_sizes.append(len(response.messages))
        token = response.next_page_token
        if not token:
            break
    assert seen == expected
    assert page_sizes == [40, 40, 40, 40, 40, 40, 10]


async def test_the_largest_page_size_returns_every_message_in_one_page(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s")
    await _insert_messages(engine, tenant, "s", 250)
    expected = await _stored_message_ids(engine, tenant, "s")
    response = await _detail(stub, tenant, "s", page_size=1000)
    assert [m.id for m in response.messages] == expected
    assert response.next_page_token == ""


@pytest.mark.parametrize("page_size", [-1, 1001])
async def test_page_size_outside_one_to_a_thousand_is_invalid(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, page_size: int
) -> None:
    await factory.session(tenant, "s")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _detail(stub, tenant, "s", page_size=page_size)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"page_size"}


async def test_a_page_ending_exactly_at_the_last_message_has_no_next_token(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    for _ in range(4):
        await factory.message(tenant, "s")
    first = await _detail(stub, tenant, "s", page_size=2)
    second = await _detail(stub, tenant, "s", page_size=2, page_token=first.next_page_token)
    assert len(second.messages) == 2
    assert second.next_page_token == ""


async def test_changing_page_size_mid_walk_visits_every_message_once_in_order(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, engine: AsyncEngine, tenant: str
) -> None:
    await factory.session(tenant, "s")
    await _insert_messages(engine, tenant, "s", 250)
    expected = await _stored_message_ids(engine, tenant, "s")
    scope = page_tokens.messages_scope(tenant, "s")
    sizes = [40, 7, 1, 100, 3, 1000]
    seen: list[int] = []
    token = ""
    for size in sizes:
        response = await _detail(stub, tenant, "s", page_size=size, page_token=token)
        assert [m.id for m in response.messages] == expected[len(seen) : len(seen) + size]
        seen.extend(m.id for m in response.messages)
        token = response.next_page_token
        if not token:
            break
        # The token counts the messages returned so far, whatever the page sizes were.
        assert page_tokens.decode(token, scope, page_size=size).offset == len(seen)
    assert token == ""
    assert seen == expected


async def _detail_token_refusal(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, session_id: str, token: str
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _detail(stub, tenant, session_id, page_token=token)
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert set(result.field_violations) == {"page_token"}, result.field_violations
    return result.field_violations["page_token"]


async def test_a_message_page_token_is_refused_for_another_session_or_tenant_saying_which(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    for session_id in ("s", "other"):
        await factory.session(tenant, session_id)
        for _ in range(3):
            await factory.message(tenant, session_id)
    token = (await _detail(stub, tenant, "s", page_size=1)).next_page_token
    assert token
    # The same session accepts it, at any page size.
    assert len((await _detail(stub, tenant, "s", page_size=5, page_token=token)).messages) == 2

    description = await _detail_token_refusal(stub, tenant, "other", token)
    assert description == page_tokens.OTHER_SESSION == "was issued for another session"

    intruder = f"{tenant}-x"
    await factory.session(intruder, "s")
    await factory.message(intruder, "s")
    description = await _detail_token_refusal(stub, intruder, "s", token)
    assert description == page_tokens.OTHER_TENANT == "was issued for another tenant"


async def test_a_session_list_token_is_a_page_token_of_another_method(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 3)
    listed = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=1), metadata=tenant_metadata(tenant)
    )
    assert listed.next_page_token
    description = await _detail_token_refusal(stub, tenant, "s-00002", listed.next_page_token)
    assert description == page_tokens.OTHER_METHOD


async def test_a_message_page_token_of_the_previous_release_says_to_start_again(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    first = await factory.message(tenant, "s")
    await factory.message(tenant, "s")
    # What version 2 returned after a first page of one message.
    old = forged_tokens.version_two(
        kind=forged_tokens.KIND_MESSAGES,
        scope=(tenant, "s", 1),
        micros=key_of(BASE_TIME),
        page=2,
        key=str(first),
    )
    description = await _detail_token_refusal(stub, tenant, "s", old)
    assert description == page_tokens.OLDER_VERSION
    assert "start again from the first page" in description


_GOOD_HIT = {
    "source": "kb-faq",
    "document_id": "doc-1",
    "chunk_id": "chunk-7",
    "score": 0.83,
    "content": "Refunds take 5 days.",
}
_GOOD_CALL = {
    "id": "call-1",
    "name": "lookup_order",
    "arguments": {"order_id": "A-17", "verbose": True, "depth": 2},
    "result": [{"state": "shipped"}, 3, None],
    "status": "ok",
    "latency_ms": 120.5,
}
_FAILED_CALL = {
    "id": "call-2",
    "name": "refund",
    "arguments": {},
    "status": "error",
    "error": "payment gateway timeout",
}


async def test_trace_collects_retrieval_tool_calls_and_errors_from_assistant_messages(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    first = await factory.message(
        tenant,
        "s",
        role="assistant",
        created_at=BASE_TIME,
        metadata={
            "retrieval": [_GOOD_HIT],
            "tool_calls": [_GOOD_CALL, _FAILED_CALL],
            "error": {"code": "TOOL_FAILED", "message": "refund failed"},
        },
    )
    second = await factory.message(
        tenant,
        "s",
        role="assistant",
        created_at=BASE_TIME + timedelta(seconds=1),
        metadata={
            "retrieval": [{"source": "kb-policy", "document_id": "doc-2", "chunk_id": "c-1"}],
            "error": [
                {"code": "RATE_LIMITED", "message": "slow down"},
                {"code": "TIMEOUT", "message": "model timed out"},
            ],
        },
    )
    trace = (await _detail(stub, tenant, "s")).trace

    assert [(h.message_id, h.source, h.document_id, h.chunk_id) for h in trace.retrieval] == [
        (first, "kb-faq", "doc-1", "chunk-7"),
        (second, "kb-policy", "doc-2", "c-1"),
    ]
    assert trace.retrieval[0].HasField("score")
    assert trace.retrieval[0].score == pytest.approx(0.83)
    assert trace.retrieval[0].content == "Refunds take 5 days."
    # A hit without a recorded score leaves the optional field unset rather than 0.
    assert not trace.retrieval[1].HasField("score")

    assert [(t.message_id, t.id, t.name) for t in trace.tools] == [
        (first, "call-1", "lookup_order"),
        (first, "call-2", "refund"),
    ]
    ok_call, failed_call = trace.tools
    assert json_format.MessageToDict(ok_call.arguments) == _GOOD_CALL["arguments"]
    assert json_format.MessageToDict(ok_call.result) == _GOOD_CALL["result"]
    assert ok_call.status == pb.TOOL_CALL_STATUS_OK
    assert ok_call.HasField("latency_ms")
    assert ok_call.latency_ms == pytest.approx(120.5)
    assert ok_call.error == ""
    assert failed_call.status == pb.TOOL_CALL_STATUS_ERROR
    assert failed_call.error == "payment gateway timeout"
    assert not failed_call.HasField("result")
    assert not failed_call.HasField("latency_ms")

    assert [(e.message_id, e.code, e.message) for e in trace.errors] == [
        (first, "TOOL_FAILED", "refund failed"),
        (second, "RATE_LIMITED", "slow down"),
        (second, "TIMEOUT", "model timed out"),
    ]


async def test_malformed_trace_entries_are_skipped_while_good_ones_in_the_same_message_stay(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    message_id = await factory.message(
        tenant,
        "s",
        role="assistant",
        metadata={
            "retrieval": ["not an object", 42, None, {"unrelated": True}, _GOOD_HIT, []],
            "tool_calls": [
                {"id": "nameless", "arguments": {"x": 1}},
                "lookup_order",
                _GOOD_CALL,
                {"name": ["not", "text"]},
            ],
            "error": [{"unrelated": 1}, "boom", {"code": "E1", "message": "kept"}, 7],
        },
    )
    # A message whose trace keys have the wrong shape altogether must not break the call.
    await factory.message(
        tenant,
        "s",
        role="assistant",
        created_at=BASE_TIME + timedelta(seconds=1),
        metadata={"retrieval": {"source": "x"}, "tool_calls": "none", "error": 5},
    )
    trace = (await _detail(stub, tenant, "s")).trace
    assert [(h.message_id, h.document_id) for h in trace.retrieval] == [(message_id, "doc-1")]
    assert [(t.message_id, t.id) for t in trace.tools] == [(message_id, "call-1")]
    assert [(e.message_id, e.code, e.message) for e in trace.errors] == [(message_id, "E1", "kept")]


@pytest.mark.parametrize("role", ["user", "tool", "system", None])
async def test_trace_ignores_metadata_of_messages_that_are_not_from_the_assistant(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, role: str | None
) -> None:
    await factory.session(tenant, "s")
    await factory.message(
        tenant,
        "s",
        role=role,
        metadata={
            "retrieval": [_GOOD_HIT],
            "tool_calls": [_GOOD_CALL],
            "error": {"code": "X", "message": "y"},
        },
    )
    response = await _detail(stub, tenant, "s")
    assert len(response.messages) == 1
    assert response.trace == pb.Trace()


async def test_trace_covers_only_the_assistant_messages_in_the_returned_page(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    ids = [
        await factory.message(
            tenant,
            "s",
            role="assistant",
            created_at=BASE_TIME + timedelta(seconds=index),
            metadata={"error": {"code": f"E{index}", "message": "m"}},
        )
        for index in range(3)
    ]
    first = await _detail(stub, tenant, "s", page_size=2)
    second = await _detail(stub, tenant, "s", page_size=2, page_token=first.next_page_token)
    assert [(e.message_id, e.code) for e in first.trace.errors] == [(ids[0], "E0"), (ids[1], "E1")]
    assert [(e.message_id, e.code) for e in second.trace.errors] == [(ids[2], "E2")]


async def test_metadata_struct_equals_the_stored_object(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    stored: dict[str, Any] = {
        "status": "active",
        "customer": {"name": "Zoë", "tier": 2, "tags": ["vip", None, True]},
        "score": 0.5,
        "empty": {},
        "nothing": None,
    }
    await factory.session(tenant, "s", metadata=stored)
    response = await _detail(stub, tenant, "s")
    assert json_format.MessageToDict(response.metadata) == stored
    assert response.session.status == pb.SESSION_STATUS_ACTIVE


async def test_null_session_metadata_gives_an_empty_struct(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", metadata=None)
    response = await _detail(stub, tenant, "s")
    assert len(response.metadata.fields) == 0
    assert response.session.status == pb.SESSION_STATUS_ACTIVE


@pytest.mark.parametrize("json_text", [dumps([1, {"status": "closed"}]), dumps("closed"), "42"])
async def test_session_metadata_that_is_not_an_object_gives_an_empty_struct_and_answers(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str, json_text: str
) -> None:
    await factory.session(tenant, "s")
    await factory.raw_metadata_sql(tenant, "s", json_text)
    response = await _detail(stub, tenant, "s")
    assert len(response.metadata.fields) == 0
    assert response.session.session_id == "s"
    assert response.session.status == pb.SESSION_STATUS_ACTIVE


async def test_messages_with_null_role_or_content_come_back_as_empty_strings(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    no_role = await factory.message(tenant, "s", role=None, content="text")
    no_content = await factory.message(
        tenant, "s", role="assistant", content=None, created_at=BASE_TIME + timedelta(seconds=1)
    )
    response = await _detail(stub, tenant, "s")
    assert [(m.id, m.role, m.content) for m in response.messages] == [
        (no_role, "", "text"),
        (no_content, "assistant", ""),
    ]


async def test_session_fields_describe_the_stored_row(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(
        tenant,
        "s",
        channel_type="whatsapp",
        metadata={"status": "closed", "endTime": "2026-01-01T10:00:00Z"},
    )
    await factory.message(tenant, "s")
    session = (await _detail(stub, tenant, "s")).session
    assert session.tenant_id == tenant
    assert session.status == pb.SESSION_STATUS_CLOSED
    assert session.channel_type == "whatsapp"
    assert session.message_count == 1
    assert session.start_time.ToDatetime(UTC) == BASE_TIME
    assert session.end_time.ToJsonString() == "2026-01-01T10:00:00Z"


async def test_large_messages_split_pages_to_stay_under_the_clients_4_mib_limit(
    stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "big")
    for index in range(5):
        await factory.message(
            tenant,
            "big",
            content=f"{index}" * 1_200_000,
            created_at=BASE_TIME + timedelta(seconds=index),
        )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="big", page_size=100, page_token=token),
            metadata=tenant_metadata(tenant),
        )
        assert response.ByteSize() < 4 * 1024 * 1024
        seen.extend(message.content[0] for message in response.messages)
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == ["0", "1", "2", "3", "4"]
    assert pages > 1
