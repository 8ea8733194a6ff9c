"""Many writers, a random mix of everything other services may do to the tables, the folder
running meanwhile: afterwards every total and message count equals a recount."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta

import asyncpg

from server.data import counters
from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from tests.factories import BASE_TIME
from tests.integration.test_counters import assert_exact, opened

WRITERS = 8
TRANSACTIONS = 40
TENANTS = ("a", "b")
SESSIONS = [f"s-{index}" for index in range(25)]
STATUSES = (None, {"status": "closed"}, {"status": "expired"}, [1], "text", {"other": 1})
CHANNELS = ("web", "sms", None)
ISOLATIONS = ("read_committed", "repeatable_read", "serializable")
# What a writer's own conflicts may raise; the transaction is then rolled back, as a real
# writer would, and counts must still be exact.
EXPECTED = (
    asyncpg.UniqueViolationError,
    asyncpg.ForeignKeyViolationError,
    asyncpg.NotNullViolationError,  # a message moved to a session that is not there
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
)


def _time(rng: random.Random) -> object:
    return BASE_TIME + timedelta(hours=rng.randrange(-30, 30))


_EXISTING = (
    "(SELECT session_id FROM chat_sessions WHERE tenant_id = $1::text ORDER BY random() LIMIT 1)"
)
KINDS = 14


async def _statement(connection: asyncpg.Connection, rng: random.Random, kind: int) -> None:
    tenant, session = rng.choice(TENANTS), rng.choice(SESSIONS)
    if kind == 0:
        rows = [
            (tenant, rng.choice(SESSIONS), rng.choice(CHANNELS), json.dumps(rng.choice(STATUSES)))
            for _ in range(rng.randint(1, 3))
        ]
        await connection.executemany(
            "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, metadata, created_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5)",
            [(*row, _time(rng)) for row in rows],
        )
    elif kind == 1:
        await connection.execute(
            "INSERT INTO chat_sessions (tenant_id, session_id, created_at) "
            "SELECT $1, 'm-' || g, $2 FROM generate_series(1, $3) AS g ON CONFLICT DO NOTHING",
            tenant,
            _time(rng),
            rng.randint(1, 4),
        )
    elif kind in (2, 3):
        await connection.execute(
            f"INSERT INTO chat_messages (tenant_id, session_id, role) "  # noqa: S608
            f"SELECT $1::text, {_EXISTING}, 'user' FROM generate_series(1, $2::int)",
            tenant,
            rng.randint(1, 4),
        )
    elif kind == 4:
        await connection.copy_records_to_table(
            "chat_messages",
            records=[(tenant, session, "assistant")] * rng.randint(1, 6),
            columns=["tenant_id", "session_id", "role"],
        )
    elif kind == 5:
        await connection.execute(
            "UPDATE chat_sessions SET metadata = $3::jsonb "
            "WHERE tenant_id = $1 AND session_id = $2",
            tenant,
            session,
            json.dumps(rng.choice(STATUSES)),
        )
    elif kind == 6:
        await connection.execute(
            "UPDATE chat_sessions SET channel_type = $2 WHERE tenant_id = $1 AND session_id < $3",
            tenant,
            rng.choice(CHANNELS),
            session,
        )
    elif kind == 7:
        await connection.execute(
            "UPDATE chat_sessions SET created_at = created_at + $3 "
            "WHERE tenant_id = $1 AND session_id = $2",
            tenant,
            session,
            timedelta(hours=rng.randrange(-48, 48)),
        )
    elif kind == 8:  # sessions without messages move: the foreign key keeps the others
        await connection.execute(
            "UPDATE chat_sessions AS s SET tenant_id = $3::text, session_id = $4::text "
            "WHERE tenant_id = $1::text AND session_id <> $2::text AND session_id = (SELECT "
            "session_id FROM chat_sessions AS e WHERE e.tenant_id = $1::text AND NOT EXISTS "
            "(SELECT FROM chat_messages AS m WHERE m.tenant_id = e.tenant_id "
            "AND m.session_id = e.session_id) LIMIT 1)",
            tenant,
            session,
            rng.choice(TENANTS),
            rng.choice(SESSIONS) + "-moved",
        )
    elif kind == 9:
        await connection.execute(
            f"UPDATE chat_messages SET session_id = {_EXISTING} "  # noqa: S608
            "WHERE tenant_id = $1::text AND session_id = $2::text",
            tenant,
            session,
        )
    elif kind == 10:
        await connection.execute(
            "UPDATE chat_messages SET content = 'edited' WHERE tenant_id = $1", tenant
        )
    elif kind == 11:
        await connection.execute(
            "DELETE FROM chat_messages WHERE id IN (SELECT id FROM chat_messages "
            "WHERE tenant_id = $1 AND session_id = $2 LIMIT 2)",
            tenant,
            session,
        )
    elif kind == 12:  # cascades to the session's messages
        await connection.execute(
            "DELETE FROM chat_sessions WHERE tenant_id = $1 AND session_id = $2", tenant, session
        )
    else:
        await connection.execute(
            rng.choice(("TRUNCATE chat_messages", "TRUNCATE chat_sessions CASCADE"))
        )


def _kind(rng: random.Random, late: bool) -> int:
    # TRUNCATE (the last kind) empties everything, drift included, so it comes rarely and never
    # in the second half, which then shows any drift the triggers cause.
    return KINDS - 1 if not late and rng.random() < 0.02 else rng.randrange(KINDS - 1)


async def _writer(dsn: str, seed: int) -> list[int]:
    """Run random transactions; return the kinds of statement each committed one held."""
    rng = random.Random(seed)
    committed: list[int] = []
    connection = await asyncpg.connect(dsn, server_settings={"lock_timeout": "5s"})
    try:
        for index in range(TRANSACTIONS):
            transaction = connection.transaction(isolation=rng.choice(ISOLATIONS))
            await transaction.start()
            kinds = [_kind(rng, index >= TRANSACTIONS // 2) for _ in range(rng.randint(1, 3))]
            try:
                for kind in kinds:
                    await _statement(connection, rng, kind)
            except EXPECTED:
                await transaction.rollback()
                continue
            if rng.random() < 0.2:
                await transaction.rollback()
                continue
            try:
                await transaction.commit()
            except EXPECTED:  # PostgreSQL has rolled it back already
                continue
            committed.extend(kinds)
    finally:
        await connection.close()
    return committed


async def test_random_concurrent_writers_leave_every_count_exact(
    private_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    seed = random.randrange(1 << 30)
    dsn = asyncpg_dsn(private_database_url)
    async with opened(private_database_url) as database:
        writers = asyncio.gather(*(_writer(dsn, seed + index) for index in range(WRITERS)))
        while not writers.done():
            # Many folds mid-write, next to writers' TRUNCATEs: a deadlock fails the test.
            await counters.fold(database)
            await asyncio.sleep(0.01)
        committed = {kind for kinds in await writers for kind in kinds}
        assert committed >= set(range(KINDS - 1)), f"seed {seed}: some kinds never committed"
        drift = await counters.check(database, tenant_id=None, repair=False)
        assert drift.clean, f"seed {seed}: {drift}"
        await assert_exact(database, None)
        connection = await asyncpg.connect(dsn)
        try:
            for table in ("chat_session_count_deltas", "chat_message_count_deltas"):
                assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
        finally:
            await connection.close()
