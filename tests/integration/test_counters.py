"""The trigger-kept counters stay exact whatever other services do to the tables."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import BASE_TIME, Factory

_SESSION_BUCKETS = """
    SELECT day, status, channel_type, count(*) FROM (
      SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
             COALESCE(metadata ->> 'status', 'active') AS status, channel_type
        FROM chat_sessions WHERE tenant_id = :t) AS s
    GROUP BY 1, 2, 3
"""
_SESSION_COUNTERS = """
    SELECT day, status, channel_type, n FROM chat_session_counts WHERE tenant_id = :t AND n <> 0
"""
_MESSAGE_COUNTS = """
    SELECT session_id, count(*) FROM chat_messages WHERE tenant_id = :t GROUP BY 1
"""
_MESSAGE_COUNTERS = """
    SELECT session_id, n FROM chat_session_message_counts WHERE tenant_id = :t AND n <> 0
"""


async def _as_set(engine: AsyncEngine, sql: str, tenant: str) -> set[tuple[object, ...]]:
    async with engine.connect() as conn:
        return {tuple(row) for row in await conn.execute(text(sql), {"t": tenant})}


async def _assert_exact(engine: AsyncEngine, tenant: str) -> None:
    assert await _as_set(engine, _SESSION_COUNTERS, tenant) == await _as_set(
        engine, _SESSION_BUCKETS, tenant
    )
    assert await _as_set(engine, _MESSAGE_COUNTERS, tenant) == await _as_set(
        engine, _MESSAGE_COUNTS, tenant
    )


async def test_counters_follow_inserts_updates_moves_and_deletes(
    engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 30, step=timedelta(hours=5))
    for index in range(12):
        await factory.message(tenant, f"s-{index % 4:05d}")
    await _assert_exact(engine, tenant)
    statements = [
        # Many rows in one statement: statuses and channels change buckets.
        'UPDATE chat_sessions SET metadata = \'{"status": "closed"}\' '
        "WHERE tenant_id = :t AND session_id < 's-00010'",
        "UPDATE chat_sessions SET channel_type = NULL "
        "WHERE tenant_id = :t AND session_id > 's-00025'",
        # A different day, and an edit that changes no bucket.
        "UPDATE chat_sessions SET created_at = created_at - interval '3 days' "
        "WHERE tenant_id = :t AND session_id = 's-00011'",
        "UPDATE chat_sessions SET updated_at = now() WHERE tenant_id = :t",
        # Messages moved between sessions, and content edits.
        "UPDATE chat_messages SET session_id = 's-00009' WHERE tenant_id = :t "
        "AND session_id = 's-00001'",
        "UPDATE chat_messages SET content = 'edited' WHERE tenant_id = :t",
        # A session renamed (the foreign key wants its messages gone first).
        "DELETE FROM chat_messages WHERE tenant_id = :t AND session_id = 's-00002'",
        "UPDATE chat_sessions SET session_id = 'renamed' WHERE tenant_id = :t "
        "AND session_id = 's-00002'",
        # Deletes, cascading to messages.
        "DELETE FROM chat_sessions WHERE tenant_id = :t AND session_id IN ('s-00000', 's-00020')",
    ]
    for statement in statements:
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"t": tenant})
        await _assert_exact(engine, tenant)


async def test_a_rolled_back_write_leaves_the_counters_untouched(
    engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 3, start=BASE_TIME)
    async with engine.connect() as conn:
        await conn.execute(text("DELETE FROM chat_sessions WHERE tenant_id = :t"), {"t": tenant})
        await conn.rollback()
    await _assert_exact(engine, tenant)
    assert len(await _as_set(engine, _SESSION_BUCKETS, tenant)) >= 1
