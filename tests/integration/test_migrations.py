"""Migrations next to live writers: up and down on a populated database while other services
write, without making them wait, and the frozen copies of rules in migrations still equal the
live ones."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import column, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.ddl import revision_module
from server.data.engine import asyncpg_dsn
from server.data.migrate import downgrade_to, upgrade_to, upgrade_to_head
from server.data.schema import sessions_table
from server.data.status_sql import counter_day, displayed_status, render
from tests.factories import BASE_TIME
from tests.integration.test_counters import assert_exact, opened

_ODD_ROWS = """(VALUES
    ('t', TIMESTAMPTZ '2026-01-01 23:59:59.999999+00', NULL::jsonb, 'web'),
    ('t', TIMESTAMPTZ '2026-01-02 00:30:00+02', '{"status": "closed"}', NULL),
    ('t', TIMESTAMPTZ 'infinity', '{"status": null}', 'sms'),
    ('t', TIMESTAMPTZ '-infinity', '[1, 2]', ''),
    ('t', TIMESTAMPTZ '0001-01-01 00:00:00+00', '"closed"', 'web'),
    ('t', TIMESTAMPTZ '2026-06-01 12:00:00+00', '{"status": 5}', 'web'),
    ('t', TIMESTAMPTZ '2026-06-01 12:00:00+00', 'null', 'web'),
    ('t', TIMESTAMPTZ '2026-06-01 12:00:00+00', '{"status": "EXPIRED"}', 'web')
  ) AS r (tenant_id, created_at, metadata, channel_type)"""


async def test_the_frozen_bucket_rules_of_the_migrations_equal_the_live_rule(
    engine: AsyncEngine,
) -> None:
    r = table("r", column("metadata"), column("created_at")).c
    live = (
        f"(r.tenant_id, {render(counter_day(r.created_at))}, "
        f"{render(displayed_status(r.metadata))}, r.channel_type)"
    )
    triggers = revision_module("0004_append_only_counters.py").session_bucket("r")
    backfill = revision_module("0002_session_counts.py")._BUCKET
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT {live} IS NOT DISTINCT FROM ({triggers}) AS triggers, "  # noqa: S608
                    f"{live} IS NOT DISTINCT FROM (SELECT (b.tenant_id, b.day, b.status, "
                    f"b.channel_type) FROM (SELECT {backfill} FROM (SELECT r.*) AS x) AS b) "
                    f"AS backfill FROM {_ODD_ROWS}"
                )
            )
        ).all()
    assert len(rows) == 8
    assert all(row.triggers and row.backfill for row in rows), rows


async def test_the_status_index_of_the_first_migration_serves_the_live_status_filter(
    engine: AsyncEngine,
) -> None:
    # Migration 0001 froze its own copy of the displayed-status expression in the index; the
    # planner uses the index only while the live rule is that same expression.
    status = render(displayed_status(sessions_table.c.metadata))
    async with engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        await conn.execute(text("SET enable_bitmapscan = off"))
        plan = (
            await conn.execute(
                text(
                    "EXPLAIN SELECT session_id FROM chat_sessions "  # noqa: S608
                    f"WHERE tenant_id = 't' AND {status} = 'closed' "
                    "ORDER BY created_at DESC, session_id DESC LIMIT 5"
                )
            )
        ).scalars()
        assert "ix_chat_sessions_tenant_status_created" in "\n".join(plan)


async def _populate(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        rng = random.Random(7)
        sessions = [
            (
                f"tenant-{index % 5}",
                f"s-{index}",
                rng.choice(("web", "sms", None)),
                json.dumps(rng.choice((None, {"status": "closed"}, [1]))),
                BASE_TIME + timedelta(hours=index),
            )
            for index in range(1500)
        ]
        await connection.executemany(
            "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, metadata, "
            "created_at) VALUES ($1, $2, $3, $4::jsonb, $5)",
            sessions,
        )
        await connection.copy_records_to_table(
            "chat_messages",
            records=[(tenant, session, "user") for tenant, session, *_ in sessions * 3],
            columns=["tenant_id", "session_id", "role"],
        )
    finally:
        await connection.close()


class _Writers:
    """Other services writing all the while: each statement may wait on a lock at most a
    moment (lock_timeout), so a migration that blocks them longer fails the test."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = asyncio.Event()
        self.transactions = 0
        self.slowest = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Writers:
        self._tasks = [asyncio.create_task(self._write(index)) for index in range(4)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)  # a writer's failure fails the test here

    async def hold(self, seconds: float) -> None:
        """One writer keeps a transaction that wrote both tables open for `seconds`, as the bot
        does while it waits for an answer: a migration that queued a lock behind it would make
        every other writer wait that long too."""
        connection = await asyncpg.connect(self._dsn)
        try:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ('tenant-3', $1)",
                    f"held-{time.monotonic()}",
                )
                await connection.execute(
                    "INSERT INTO chat_messages (tenant_id, session_id) VALUES ('tenant-3', 's-3')"
                )
                await asyncio.sleep(seconds)
        finally:
            await connection.close()

    async def _write(self, index: int) -> None:
        connection = await asyncpg.connect(self._dsn, server_settings={"lock_timeout": "2s"})
        try:
            serial = 0
            while not self._stop.is_set():
                serial += 1
                session = f"w{index}-{serial}"
                started = time.monotonic()
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO chat_sessions (tenant_id, session_id, created_at) "
                        "VALUES ('tenant-1', $1, $2)",
                        session,
                        BASE_TIME,
                    )
                    await connection.execute(
                        "INSERT INTO chat_messages (tenant_id, session_id) VALUES ('tenant-1', $1)",
                        session,
                    )
                    await connection.execute(
                        'UPDATE chat_sessions SET metadata = \'{"status": "closed"}\' '
                        "WHERE tenant_id = 'tenant-2' AND session_id = $1",
                        f"s-{(serial * 5 + 2) % 1500}",
                    )
                    if serial % 3 == 0:
                        await connection.execute(
                            "DELETE FROM chat_sessions WHERE tenant_id = 'tenant-1' "
                            "AND session_id = $1",
                            f"w{index}-{serial - 1}",
                        )
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.transactions += 1
                await asyncio.sleep(0.002)
        finally:
            await connection.close()


# Drift as migrations 0002 and 0003 count: counters only, no deltas.
_OLD_DRIFT = (
    """
    SELECT count(*) FROM (
      SELECT tenant_id, day, status, channel_type FROM (
        SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date AS day,
               COALESCE(metadata ->> 'status', 'active') AS status, channel_type, 1 AS n
          FROM chat_sessions
        UNION ALL SELECT tenant_id, day, status, channel_type, -n FROM chat_session_counts
      ) AS b GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
    ) AS drift
    """,
    """
    SELECT count(*) FROM (
      SELECT tenant_id, session_id FROM (
        SELECT tenant_id, session_id, 1 AS n FROM chat_messages
        UNION ALL SELECT tenant_id, session_id, -n FROM chat_session_message_counts
      ) AS m GROUP BY 1, 2 HAVING sum(n) <> 0
    ) AS drift
    """,
)


async def _migrate_next_to(
    held: Coroutine[Any, Any, None], migrate: Callable[..., None], *arguments: str
) -> None:
    holder = asyncio.create_task(held)
    await asyncio.sleep(0.3)  # the held transaction has written by now
    await asyncio.to_thread(migrate, *arguments)
    await holder


async def test_migrations_run_up_and_down_on_a_populated_database_while_writers_write(
    private_database_url: str,
) -> None:
    dsn = asyncpg_dsn(private_database_url)
    await asyncio.to_thread(upgrade_to, private_database_url, "0001")
    await _populate(dsn)
    async with _Writers(dsn) as writers:
        await asyncio.sleep(0.2)
        before = writers.transactions
        await _migrate_next_to(writers.hold(3), upgrade_to_head, private_database_url)
        assert writers.transactions > before  # they kept writing during the upgrade
        async with opened(private_database_url) as database:
            await assert_exact(database, None)
        before = writers.transactions
        await _migrate_next_to(writers.hold(3), downgrade_to, private_database_url, "0003")
        assert writers.transactions > before
        connection = await asyncpg.connect(dsn)
        try:
            assert [await connection.fetchval(drift) for drift in _OLD_DRIFT] == [0, 0]
        finally:
            await connection.close()
        await asyncio.to_thread(upgrade_to_head, private_database_url)
    async with opened(private_database_url) as database:
        await assert_exact(database, None)
    # No writer waited on a lock for longer than its lock timeout (2 s) allows.
    assert writers.slowest < 5
