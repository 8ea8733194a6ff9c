"""The counters stay exact whatever other services do to the tables, and keeping them costs
those writers no lock that another writer, or a status update, waits for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data import counters
from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from server.data.statements import Database
from tests.factories import BASE_TIME, Factory, tenant_metadata

INSERT_SESSION = (
    "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, created_at, updated_at) "
    "VALUES ($1, $2, 'web', $3, $3)"
)
INSERT_MESSAGE = (
    "INSERT INTO chat_messages (tenant_id, session_id, role, content, created_at) "
    "VALUES ($1, $2, 'user', 'hi', $3)"
)


@asynccontextmanager
async def opened(database_url: str) -> AsyncIterator[Database]:
    """A Database of the test's own (no statement observer: upkeep, not a request)."""
    database = Database(database_url, pool_size=2, pool_timeout=10, connect_timeout=10)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def assert_exact(database: Database, tenant_id: str | None) -> None:
    """Counters plus deltas equal a recount, before and after a fold."""
    for _ in range(2):
        drift = await counters.check(database, tenant_id=tenant_id, repair=False)
        assert drift.clean, drift
        await counters.fold(database)


async def test_counters_follow_inserts_updates_moves_and_deletes(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 30, step=timedelta(hours=5))
    for index in range(12):
        await factory.message(tenant, f"s-{index % 4:05d}")
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
        # A session moved to another tenant.
        "UPDATE chat_sessions SET tenant_id = :t || '-moved' WHERE tenant_id = :t "
        "AND session_id = 's-00021'",
    ]
    async with opened(database_url) as database:
        await assert_exact(database, tenant)
        for statement in statements:
            async with engine.begin() as conn:
                await conn.execute(text(statement), {"t": tenant})
            await assert_exact(database, tenant)
            await assert_exact(database, f"{tenant}-moved")


async def test_a_rolled_back_write_leaves_the_counters_untouched(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 3, start=BASE_TIME)
    async with engine.connect() as conn:
        await conn.execute(text("DELETE FROM chat_sessions WHERE tenant_id = :t"), {"t": tenant})
        await conn.rollback()
    async with opened(database_url) as database:
        await assert_exact(database, tenant)


async def test_an_open_writer_transaction_blocks_no_other_writer_nor_a_status_update(
    database_url: str, stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    dsn = asyncpg_dsn(database_url)
    holder, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await holder.execute(INSERT_SESSION, tenant, "closing", BASE_TIME)
        # A writer of the same tenant, day, status and channel holds its transaction open, as
        # the bot does while it waits for an answer.
        open_transaction = holder.transaction()
        await open_transaction.start()
        await holder.execute(INSERT_SESSION, tenant, "held", BASE_TIME)
        await holder.execute(INSERT_MESSAGE, tenant, "held", BASE_TIME)
        # Without the guarantee these wait for the holder: the lock timeout turns that into a
        # failure instead of a hang.
        await other.execute("SET lock_timeout = '2s'")
        async with other.transaction():
            await other.execute(INSERT_SESSION, tenant, "other", BASE_TIME)
            await other.execute(INSERT_MESSAGE, tenant, "other", BASE_TIME)
        reply = await stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id="closing", status=pb.SESSION_STATUS_CLOSED),
            metadata=tenant_metadata(tenant),
            timeout=3,
        )
        assert reply.session.status == pb.SESSION_STATUS_CLOSED
        listed = await stub.ListSessions(
            pb.ListSessionsRequest(), metadata=tenant_metadata(tenant), timeout=3
        )
        assert listed.pagination.total == 2  # the held session is not committed
        async with opened(database_url) as database:
            # The folder does not wait for it either (the test server's own folder may hold the
            # lock for a moment: then this one skips, as documented, and tries again).
            for _ in range(50):
                if (await counters.fold(database)).held:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the fold lock was never free")
            await open_transaction.commit()
            await assert_exact(database, tenant)
    finally:
        await holder.close()
        await other.close()


@pytest.mark.parametrize("isolation", ["repeatable_read", "serializable"])
async def test_writers_at_strict_isolation_get_no_serialization_failure_from_the_counters(
    database_url: str, tenant: str, isolation: str
) -> None:
    dsn = asyncpg_dsn(database_url)
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await first.execute(INSERT_SESSION, tenant, "old", BASE_TIME)
        await first.execute(INSERT_SESSION, tenant, "other", BASE_TIME)
        early = first.transaction(isolation=isolation)
        await early.start()
        await first.execute("SELECT 1")  # takes the transaction's snapshot
        # Another writer changes the same bucket and commits after the first one's snapshot.
        async with second.transaction(isolation=isolation):
            await second.execute(INSERT_SESSION, tenant, "late", BASE_TIME)
            await second.execute(INSERT_MESSAGE, tenant, "old", BASE_TIME)
        async with opened(database_url) as database:
            await counters.fold(database)
        # The first writer now writes the same bucket and message counter: it must commit.
        await first.execute(INSERT_SESSION, tenant, "mine", BASE_TIME)
        await first.execute(INSERT_MESSAGE, tenant, "old", BASE_TIME)
        await first.execute(
            'UPDATE chat_sessions SET metadata = \'{"status": "closed"}\' '
            "WHERE tenant_id = $1 AND session_id = 'other'",
            tenant,
        )
        await early.commit()
        async with opened(database_url) as database:
            await assert_exact(database, tenant)
    finally:
        await first.close()
        await second.close()


async def test_copy_and_cascading_deletes_are_counted(database_url: str, tenant: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.copy_records_to_table(
            "chat_sessions",
            records=[(tenant, f"c-{i}", "web", BASE_TIME, BASE_TIME) for i in range(50)],
            columns=["tenant_id", "session_id", "channel_type", "created_at", "updated_at"],
        )
        await connection.copy_records_to_table(
            "chat_messages",
            records=[(tenant, f"c-{i % 50}", "user", BASE_TIME) for i in range(500)],
            columns=["tenant_id", "session_id", "role", "created_at"],
        )
        async with opened(database_url) as database:
            await assert_exact(database, tenant)
            await connection.execute(
                "DELETE FROM chat_sessions WHERE tenant_id = $1 AND session_id < 'c-3'", tenant
            )
            await assert_exact(database, tenant)
    finally:
        await connection.close()


async def test_a_bulk_copy_is_folded_and_logged_in_one_move(
    private_database_url: str, tenant: str
) -> None:
    """20,000 messages in one COPY: one move folds them and logs each once (the timeout only
    keeps a hang from stalling the suite)."""
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    connection = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        await connection.execute(INSERT_SESSION, tenant, "s", BASE_TIME)
        await connection.copy_records_to_table(
            "chat_messages",
            records=[(tenant, "s", "user", BASE_TIME) for _ in range(20_000)],
            columns=["tenant_id", "session_id", "role", "created_at"],
        )
        async with opened(private_database_url) as database, asyncio.timeout(60):
            folded = await counters.fold(database)
        assert folded.message_deltas == 20_000
        logged = await connection.fetchval(
            "SELECT count(DISTINCT message_id) FROM chat_session_changes WHERE kind = 'M'"
        )
        assert logged == 20_000
    finally:
        await connection.close()


async def test_truncate_of_either_table_empties_its_counters(private_database_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    connection = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        for index in range(5):
            await connection.execute(INSERT_SESSION, "t", f"s-{index}", BASE_TIME)
            await connection.execute(INSERT_MESSAGE, "t", f"s-{index}", BASE_TIME)
        async with opened(private_database_url) as database:
            await counters.fold(database)
            await connection.execute(INSERT_MESSAGE, "t", "s-0", BASE_TIME)  # unfolded
            await connection.execute("TRUNCATE chat_messages")
            await assert_exact(database, None)
            assert await connection.fetchval("SELECT count(*) FROM chat_session_counts") > 0
            await connection.execute(INSERT_MESSAGE, "t", "s-0", BASE_TIME)
            await connection.execute("TRUNCATE chat_sessions CASCADE")
            await assert_exact(database, None)
            for table in (
                "chat_session_counts",
                "chat_session_count_deltas",
                "chat_session_message_counts",
                "chat_message_count_deltas",
            ):
                assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
    finally:
        await connection.close()


async def _wait_for_lock_wait(observer: asyncpg.Connection) -> None:
    """Until some backend of this database waits for a lock."""
    for _ in range(200):
        waiting = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the TRUNCATE never waited")


@pytest.mark.parametrize(
    ("truncated", "first", "second"),
    [
        ("chat_sessions CASCADE", "chat_session_count_deltas", "chat_session_counts"),
        ("chat_messages", "chat_message_count_deltas", "chat_session_message_counts"),
    ],
)
async def test_a_writers_truncate_waits_for_a_fold_in_flight_instead_of_deadlocking(
    private_database_url: str, truncated: str, first: str, second: str
) -> None:
    """A fold holding its lock and one table while a writer's TRUNCATE starts: under 0004 the
    trigger locked the other table and the two deadlocked; now the trigger waits for the fold
    lock before any table."""
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    dsn = asyncpg_dsn(private_database_url)
    folder, writer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await writer.execute(INSERT_SESSION, "t", "s", BASE_TIME)
        await writer.execute(INSERT_MESSAGE, "t", "s", BASE_TIME)
        async with folder.transaction():
            assert await folder.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", counters.FOLD_LOCK_KEY
            )
            await folder.execute(f"LOCK TABLE {first} IN ROW EXCLUSIVE MODE")
            truncate = asyncio.create_task(writer.execute(f"TRUNCATE {truncated}"))
            await _wait_for_lock_wait(folder)
            await folder.execute(f"LOCK TABLE {second} IN ROW EXCLUSIVE MODE")
            await folder.execute(f"DELETE FROM {first}")  # noqa: S608 -- a test's table name
        await asyncio.wait_for(truncate, 10)  # raises DeadlockDetectedError under 0004
        async with opened(private_database_url) as database:
            await assert_exact(database, None)
    finally:
        await folder.close()
        await writer.close()


async def test_a_writer_role_without_grants_on_our_tables_writes_with_any_search_path(
    private_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    role = f"writer_{uuid.uuid4().hex[:8]}"
    own = f"{role}_own"
    owner = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        # Exactly what another service holds: its own tables and a schema of its own.
        await owner.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON chat_sessions, chat_messages "
            f"TO {role}"
        )
        await owner.execute(f"GRANT USAGE ON SEQUENCE chat_messages_id_seq TO {role}")
        await owner.execute(f"CREATE SCHEMA {own} AUTHORIZATION {role}")
        search_paths = (own, "pg_catalog", f"{own}, pg_catalog, public", '""')
        for index, search_path in enumerate(search_paths):
            writer = await asyncpg.connect(
                asyncpg_dsn(private_database_url),
                user=role,
                server_settings={"search_path": search_path},
            )
            try:
                assert await writer.fetchval("SELECT current_user") == role
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await writer.fetch("SELECT * FROM public.chat_session_count_deltas")
                if index == 0:
                    # An operator of the writer's own that would take over an unqualified `->>`
                    # where its schema comes before pg_catalog (the third search_path).
                    await writer.execute(
                        f"CREATE FUNCTION {own}.hijack(jsonb, text) RETURNS text "
                        "LANGUAGE sql AS $$SELECT 'hijacked'$$"
                    )
                    await writer.execute(
                        f"CREATE OPERATOR {own}.->> (LEFTARG = jsonb, RIGHTARG = text, "
                        f"FUNCTION = {own}.hijack)"
                    )
                session = f"s-{index}"
                async with writer.transaction():
                    await writer.execute(
                        "INSERT INTO public.chat_sessions (tenant_id, session_id, metadata) "
                        "VALUES ('t', $1, '{\"status\": \"closed\"}')",
                        session,
                    )
                    await writer.execute(
                        "INSERT INTO public.chat_messages (tenant_id, session_id) VALUES ('t', $1)",
                        session,
                    )
                await writer.execute(
                    "UPDATE public.chat_sessions SET channel_type = 'sms' WHERE session_id = $1",
                    session,
                )
                await writer.execute("DELETE FROM public.chat_messages WHERE session_id = 's-0'")
            finally:
                await writer.close()
        async with opened(private_database_url) as database:
            await assert_exact(database, None)
        statuses = await owner.fetch("SELECT DISTINCT status FROM chat_session_counts WHERE n > 0")
        assert [row["status"] for row in statuses] == ["closed"]
        writer = await asyncpg.connect(asyncpg_dsn(private_database_url), user=role)
        try:
            await writer.execute("TRUNCATE public.chat_sessions, public.chat_messages")
        finally:
            await writer.close()
        async with opened(private_database_url) as database:
            await assert_exact(database, None)
    finally:
        await owner.execute(f"DROP SCHEMA IF EXISTS {own} CASCADE")
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


def _check_counts(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "check-counts", "--log-level", "WARNING", *arguments],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_check_counts_reports_and_repairs_what_bypassed_triggers_missed(
    private_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    connection = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        for index in range(3):
            await connection.execute(INSERT_SESSION, "kept", f"s-{index}", BASE_TIME)
        # The ways triggers get bypassed: a replica-mode session (pg_restore
        # --disable-triggers does the same) and a disabled trigger.
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(INSERT_SESSION, "t", "restored", BASE_TIME)
        await connection.execute(INSERT_MESSAGE, "t", "restored", BASE_TIME)
        await connection.execute("SET session_replication_role = DEFAULT")
        await connection.execute(
            "ALTER TABLE chat_sessions DISABLE TRIGGER chat_sessions_count_delete"
        )
        await connection.execute(INSERT_SESSION.replace("'web'", "'sms'"), "t", "gone", BASE_TIME)
        await connection.execute("DELETE FROM chat_sessions WHERE session_id = 'gone'")
        await connection.execute(
            "ALTER TABLE chat_sessions ENABLE TRIGGER chat_sessions_count_delete"
        )

        found = await asyncio.to_thread(_check_counts, private_database_url, "--tenant", "t")
        assert found.returncode == 1, found.stderr
        assert sorted(found.stdout.splitlines()) == [
            "messages tenant='t' session='restored' drift=+1",
            "sessions tenant='t' day=2026-01-01 status='active' channel='sms' drift=-1",
            "sessions tenant='t' day=2026-01-01 status='active' channel='web' drift=+1",
            "tenant 't': 3 counters drifted (found)",
        ]
        untouched = await asyncio.to_thread(_check_counts, private_database_url, "--tenant", "kept")
        assert (untouched.returncode, untouched.stdout) == (0, "tenant 'kept': exact\n")

        repaired = await asyncio.to_thread(_check_counts, private_database_url, "--repair")
        assert repaired.returncode == 0, repaired.stderr
        assert repaired.stdout.splitlines()[-1] == "all tenants: 3 counters drifted (repaired)"
        again = await asyncio.to_thread(_check_counts, private_database_url)
        assert (again.returncode, again.stdout) == (0, "all tenants: exact\n")
        async with opened(private_database_url) as database:
            await assert_exact(database, None)
    finally:
        await connection.close()


async def test_a_fold_while_another_instance_folds_does_nothing_and_says_so(
    database_url: str, tenant: str
) -> None:
    other_instance = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await other_instance.execute(INSERT_SESSION, tenant, "s", BASE_TIME)
        async with other_instance.transaction():
            await other_instance.execute("SELECT pg_advisory_xact_lock($1)", counters.FOLD_LOCK_KEY)
            async with opened(database_url) as database:
                assert await counters.fold(database) == counters.FoldResult(False, 0, 0)
                await assert_exact(database, tenant)  # its own fold waits for nothing either
    finally:
        await other_instance.close()
