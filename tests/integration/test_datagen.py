"""The benchmark dataset generator: a tiny spec loaded by COPY, checked in SQL and via the API."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.status import parse_end_time
from server.tools.datagen import DatasetSpec, DatasetSummary, generate
from tests.conftest import REPO_ROOT
from tests.factories import tenant_metadata

# Enough sessions for the status shares to mean something, few enough messages to load fast.
SPEC = DatasetSpec(
    sessions=400,
    messages_per_session=4,
    small_tenants=2,
    small_tenant_sessions=8,
    huge_sessions=1,
    huge_session_messages=300,
    seed=7,
)
Dataset = tuple[DatasetSpec, DatasetSummary]


@pytest.fixture(scope="module")
async def dataset(database_url: str) -> Dataset:
    """SPEC under a tenant prefix of its own, generated once for the module."""
    spec = replace(SPEC, tenant_prefix=f"dg-{uuid.uuid4().hex[:10]}")
    lines: list[str] = []
    summary = await generate(database_url, spec, progress=lines.append)
    assert lines, "progress was never reported"
    return spec, summary


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def _session_counts(engine: AsyncEngine, tenant_id: str) -> tuple[int, int]:
    rows = await _rows(
        engine,
        "SELECT (SELECT count(*) FROM chat_sessions WHERE tenant_id = :t),"
        " (SELECT count(*) FROM chat_messages WHERE tenant_id = :t)",
        t=tenant_id,
    )
    return int(rows[0][0]), int(rows[0][1])


async def test_summary_matches_the_rows_each_tenant_got(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, summary = dataset
    assert [t.tenant_id for t in summary.tenants] == [
        f"{spec.tenant_prefix}-big",
        f"{spec.tenant_prefix}-small-000",
        f"{spec.tenant_prefix}-small-001",
    ]
    for tenant in summary.tenants:
        assert not tenant.skipped
        assert await _session_counts(engine, tenant.tenant_id) == (
            tenant.sessions,
            tenant.messages,
        )
    assert summary.tenants[0].sessions == 401  # 400 ordinary sessions plus the huge one
    for small in summary.tenants[1:]:
        assert 6 <= small.sessions <= 10  # about small_tenant_sessions, +-25%
    assert summary.sessions == sum(t.sessions for t in summary.tenants)
    assert summary.messages == sum(t.messages for t in summary.tenants)


async def test_huge_session_has_the_requested_number_of_messages(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT count(*) FROM chat_messages WHERE tenant_id = :t AND session_id = 'huge-0'",
        t=spec.big_tenant,
    )
    assert rows[0][0] == 300


async def test_sessions_have_their_message_count_around_the_requested_average(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT count(*) FROM chat_messages WHERE tenant_id = :t AND session_id <> 'huge-0'"
        " GROUP BY session_id",
        t=spec.big_tenant,
    )
    counts = [row[0] for row in rows]
    assert len(counts) == 400
    assert min(counts) >= 2
    assert max(counts) <= 6
    assert 3.5 <= sum(counts) / len(counts) <= 4.5


async def test_status_mix_is_mostly_active_with_some_closed_and_expired(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT metadata FROM chat_sessions WHERE tenant_id = :t AND session_id <> 'huge-0'",
        t=spec.big_tenant,
    )
    kinds: Counter[str] = Counter()
    for (metadata,) in rows:
        if metadata is None:
            kinds["null"] += 1
        elif "status" not in metadata:
            kinds["no status"] += 1
        else:
            kinds[metadata["status"]] += 1
    total = sum(kinds.values())
    assert set(kinds) == {"null", "no status", "active", "closed", "expired"}
    assert 0.60 <= (kinds["null"] + kinds["no status"] + kinds["active"]) / total <= 0.80
    assert 0.12 <= kinds["closed"] / total <= 0.28
    assert 0.04 <= kinds["expired"] / total <= 0.16


async def test_closed_and_expired_sessions_end_after_their_last_message(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT s.metadata, s.created_at, max(m.created_at) FROM chat_sessions s"
        " JOIN chat_messages m ON m.tenant_id = s.tenant_id AND m.session_id = s.session_id"
        " WHERE s.tenant_id = :t AND s.metadata ->> 'status' IN ('closed', 'expired')"
        " GROUP BY s.session_id, s.metadata, s.created_at",
        t=spec.big_tenant,
    )
    assert rows
    for metadata, created_at, last_message in rows:
        assert metadata["endTime"].endswith("Z")
        ended = parse_end_time(metadata["endTime"])
        assert ended is not None
        assert created_at < last_message < ended


async def test_active_sessions_have_no_end_time(dataset: Dataset, engine: AsyncEngine) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT count(*) FROM chat_sessions WHERE tenant_id = :t"
        " AND COALESCE(metadata ->> 'status', 'active') = 'active' AND metadata ? 'endTime'",
        t=spec.big_tenant,
    )
    assert rows[0][0] == 0


async def test_created_at_spreads_over_the_days_before_the_reference_time(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT min(created_at), max(created_at), count(DISTINCT created_at::date)"
        " FROM chat_sessions WHERE tenant_id = :t",
        t=spec.big_tenant,
    )
    first, last, days = rows[0]
    assert last <= spec.reference_time
    assert (spec.reference_time - first).days <= spec.days
    assert (last - first).days >= spec.days - 2
    assert days >= spec.days * 0.9


async def test_channel_types_come_from_a_few_values(dataset: Dataset, engine: AsyncEngine) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT channel_type, count(*) FROM chat_sessions WHERE tenant_id = :t"
        " GROUP BY channel_type",
        t=spec.big_tenant,
    )
    channels = {channel: count for channel, count in rows}
    assert set(channels) <= {"web", "whatsapp", "email", "sms", None}
    assert {"web", "whatsapp", "email", "sms"} <= set(channels)


async def test_messages_alternate_user_and_assistant_with_increasing_times(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT session_id, role, content, created_at FROM chat_messages WHERE tenant_id = :t"
        " ORDER BY session_id, created_at, id",
        t=spec.small_tenant(0),
    )
    assert rows
    by_session: dict[str, list[tuple[str, str, datetime]]] = {}
    for session_id, role, content, created_at in rows:
        by_session.setdefault(session_id, []).append((role, content, created_at))
    for messages in by_session.values():
        roles = [role for role, _, _ in messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
        times = [created_at for _, _, created_at in messages]
        assert all(earlier < later for earlier, later in itertools.pairwise(times))
        assert all(50 <= len(content) <= 400 for _, content, _ in messages)


async def test_assistant_metadata_carries_retrieval_tool_calls_and_errors(
    dataset: Dataset, engine: AsyncEngine
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT role, count(*) FILTER (WHERE metadata IS NOT NULL),"
        " count(*) FILTER (WHERE metadata ? 'retrieval'),"
        " count(*) FILTER (WHERE metadata ? 'tool_calls'),"
        " count(*) FILTER (WHERE metadata ? 'error'), count(*)"
        " FROM chat_messages WHERE tenant_id = :t GROUP BY role",
        t=spec.big_tenant,
    )
    stats = {row[0]: row[1:] for row in rows}
    assert set(stats) == {"user", "assistant"}
    assert stats["user"][0] == 0
    with_metadata, retrieval, tool_calls, errors, total = stats["assistant"]
    assert 0 < with_metadata < total
    assert retrieval > tool_calls > errors > 0
    sample = await _rows(
        engine,
        "SELECT metadata FROM chat_messages WHERE tenant_id = :t AND metadata ? 'tool_calls'"
        " ORDER BY id LIMIT 20",
        t=spec.big_tenant,
    )
    for (metadata,) in sample:
        for call in metadata["tool_calls"]:
            assert set(call) == {
                "id",
                "name",
                "arguments",
                "result",
                "status",
                "latency_ms",
                "error",
            }
            assert call["status"] in ("ok", "error")
            assert isinstance(call["arguments"], dict)


async def test_trace_of_a_generated_session_is_served(
    dataset: Dataset, engine: AsyncEngine, stub: pb_grpc.SessionMonitoringStub
) -> None:
    spec, _ = dataset
    rows = await _rows(
        engine,
        "SELECT session_id,"
        " sum(jsonb_array_length(COALESCE(metadata -> 'retrieval', '[]'))),"
        " sum(jsonb_array_length(COALESCE(metadata -> 'tool_calls', '[]')))"
        " FROM chat_messages WHERE tenant_id = :t AND role = 'assistant'"
        " GROUP BY session_id HAVING bool_or(metadata ? 'tool_calls')"
        " ORDER BY session_id LIMIT 1",
        t=spec.big_tenant,
    )
    session_id, hits, calls = rows[0]
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id=session_id, page_size=1000),
        metadata=tenant_metadata(spec.big_tenant),
    )
    assert len(response.trace.retrieval) == hits
    assert len(response.trace.tools) == calls > 0
    assistant_ids = {m.id for m in response.messages if m.role == "assistant"}
    assert {hit.message_id for hit in response.trace.retrieval} <= assistant_ids
    assert all(call.name and call.id for call in response.trace.tools)


async def test_list_sessions_total_equals_the_generated_count(
    dataset: Dataset, stub: pb_grpc.SessionMonitoringStub
) -> None:
    _, summary = dataset
    for tenant in summary.tenants:
        response: pb.ListSessionsResponse = await stub.ListSessions(
            pb.ListSessionsRequest(page_size=1), metadata=tenant_metadata(tenant.tenant_id)
        )
        assert response.pagination.total == tenant.sessions


async def test_huge_session_reports_its_message_count_through_the_server(
    dataset: Dataset, stub: pb_grpc.SessionMonitoringStub
) -> None:
    spec, _ = dataset
    response: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="huge-0", page_size=10),
        metadata=tenant_metadata(spec.big_tenant),
    )
    assert response.session.message_count == 300
    assert len(response.messages) == 10
    assert response.next_page_token


TINY = DatasetSpec(
    sessions=12,
    messages_per_session=3,
    small_tenants=1,
    small_tenant_sessions=4,
    huge_sessions=0,
    seed=3,
)
_SNAPSHOT = (
    "SELECT s.session_id, s.channel_type, s.metadata, s.created_at, s.updated_at,"
    " m.role, m.content, m.metadata, m.created_at"
    " FROM chat_sessions s JOIN chat_messages m USING (tenant_id, session_id)"
    " WHERE s.tenant_id = :t ORDER BY s.session_id, m.created_at"
)


async def test_existing_tenants_are_skipped_unless_replaced_and_a_seed_repeats_its_rows(
    database_url: str, engine: AsyncEngine
) -> None:
    spec = replace(TINY, tenant_prefix=f"dg-{uuid.uuid4().hex[:10]}")
    first = await generate(database_url, spec, progress=None)
    before = await _rows(engine, _SNAPSHOT, t=spec.big_tenant)
    assert len(before) == first.tenants[0].messages > 0

    again = await generate(database_url, spec, progress=None)
    assert [t.skipped for t in again.tenants] == [True, True]
    assert (again.sessions, again.messages) == (0, 0)
    assert await _session_counts(engine, spec.big_tenant) == (12, first.tenants[0].messages)

    replaced = await generate(database_url, replace(spec, replace=True), progress=None)
    assert replaced.tenants == first.tenants
    assert await _rows(engine, _SNAPSHOT, t=spec.big_tenant) == before


async def test_another_seed_generates_other_rows(database_url: str, engine: AsyncEngine) -> None:
    prefix = f"dg-{uuid.uuid4().hex[:10]}"
    await generate(database_url, replace(TINY, tenant_prefix=prefix + "a"), progress=None)
    other = replace(TINY, tenant_prefix=prefix + "b", seed=4)
    await generate(database_url, other, progress=None)
    a = await _rows(engine, _SNAPSHOT, t=prefix + "a-big")
    b = await _rows(engine, _SNAPSHOT, t=prefix + "b-big")
    assert [row[1:] for row in a] != [row[1:] for row in b]


async def test_command_line_generates_the_requested_sizes_and_then_skips(
    database_url: str, engine: AsyncEngine
) -> None:
    prefix = f"dg-{uuid.uuid4().hex[:10]}"
    arguments = [
        "-m",
        "server.tools",
        "generate-data",
        "--sessions=7",
        "--messages-per-session=2",
        "--small-tenants=1",
        "--small-tenant-sessions=4",
        "--huge-sessions=1",
        "--huge-session-messages=25",
        f"--tenant-prefix={prefix}",
        "--tenant=" + prefix + "-main",
    ]
    environment = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}

    async def run() -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *arguments,
            cwd=REPO_ROOT,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        return stderr.decode()

    await run()
    sessions, messages = await _session_counts(engine, prefix + "-main")
    assert sessions == 8
    assert messages >= 7 + 25
    small_sessions, _ = await _session_counts(engine, prefix + "-small-000")
    assert 3 <= small_sessions <= 5  # about --small-tenant-sessions, +-25%

    assert "already has sessions, skipped" in await run()
    assert await _session_counts(engine, prefix + "-main") == (sessions, messages)


def test_spec_rejects_sizes_that_cannot_be_generated() -> None:
    with pytest.raises(ValueError, match="messages_per_session"):
        DatasetSpec(messages_per_session=0)
    with pytest.raises(ValueError, match="sessions"):
        DatasetSpec(sessions=-1)


async def test_two_generators_aimed_at_one_tenant_load_it_once(
    database_url: str, engine: AsyncEngine
) -> None:
    spec = replace(TINY, tenant_prefix=f"dg-{uuid.uuid4().hex[:10]}")
    first, second = await asyncio.gather(
        generate(database_url, spec, progress=None), generate(database_url, spec, progress=None)
    )
    for one, other in zip(first.tenants, second.tenants, strict=True):
        assert one.tenant_id == other.tenant_id
        assert sorted([one.skipped, other.skipped]) == [False, True]
        loaded = other if one.skipped else one
        assert await _session_counts(engine, loaded.tenant_id) == (
            loaded.sessions,
            loaded.messages,
        )
