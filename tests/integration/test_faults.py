"""Deadlines, cancellation, overload limits and write conflicts against real PostgreSQL locks."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.engine import APPLICATION_NAME
from server.transport import errors
from server.transport import servicer as service
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving

# Short, so the lock is held briefly; long enough for the server to open a fresh connection and
# send its query before the deadline passes (the previous cancelled call may have discarded one).
SHORT_DEADLINE = 0.5
# Bound for the polling loops below: generous, so a slow machine never fails a correct server,
# yet short, because the table lock held meanwhile stalls every other test.
WAIT_LIMIT = 5.0
# Our own lock must never wait long behind another test's transaction.
HOLDER_LOCK_TIMEOUT = "5s"
TENANT_ID = re.compile(r"^[a-z0-9-]+$")


@asynccontextmanager
async def _table_locked(engine: AsyncEngine) -> AsyncIterator[int]:
    """Hold ACCESS EXCLUSIVE on chat_sessions (blocking every read); yield the holder's pid."""
    async with engine.connect() as conn:
        try:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{HOLDER_LOCK_TIMEOUT}'"))
            await conn.execute(text("LOCK TABLE chat_sessions IN ACCESS EXCLUSIVE MODE"))
            yield await _pid(conn)
        finally:
            await conn.rollback()


@asynccontextmanager
async def _row_locked(engine: AsyncEngine, tenant: str, session_id: str) -> AsyncIterator[int]:
    """Hold the row lock of one session (blocking its writers); yield the holder's pid."""
    async with engine.connect() as conn:
        try:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{HOLDER_LOCK_TIMEOUT}'"))
            locked = await conn.execute(
                text(
                    "SELECT 1 FROM chat_sessions WHERE tenant_id = :t AND session_id = :s "
                    "FOR UPDATE"
                ),
                {"t": tenant, "s": session_id},
            )
            assert locked.scalar_one() == 1
            yield await _pid(conn)
        finally:
            await conn.rollback()


async def _pid(conn: Any) -> int:
    pid: int = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def _waiting_behind(engine: AsyncEngine, holder: int) -> int:
    """How many of the service's queries are active and waiting on a lock `holder` holds."""
    async with engine.connect() as conn:
        count: int = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = :app AND state = 'active' "
                    "AND wait_event_type = 'Lock' AND :holder = ANY(pg_blocking_pids(pid))"
                ),
                {"app": APPLICATION_NAME, "holder": holder},
            )
        ).scalar_one()
        return count


async def _until_waiting(engine: AsyncEngine, holder: int) -> None:
    """Until a query of the service is blocked behind `holder`."""
    await _until_blocked_count(engine, holder, nonzero=True)


async def _until_nothing_waits(engine: AsyncEngine, holder: int) -> None:
    """Until no query of the service is blocked behind `holder` (it was cancelled)."""
    try:
        await _until_blocked_count(engine, holder, nonzero=False)
    except TimeoutError:
        pytest.fail(
            f"the service's query still waits on the lock {WAIT_LIMIT}s after its call ended: "
            "ending the call did not cancel it in PostgreSQL"
        )


async def _until_blocked_count(engine: AsyncEngine, holder: int, *, nonzero: bool) -> None:
    async with asyncio.timeout(WAIT_LIMIT):
        while True:
            if bool(await _waiting_behind(engine, holder)) == nonzero:
                return
            await asyncio.sleep(0.01)


async def _holds_lock(engine: AsyncEngine, holder: int, mode: str) -> bool:
    """Whether `holder` still holds its `mode` lock on chat_sessions."""
    async with engine.connect() as conn:
        held: bool = (
            await conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = :holder AND granted "
                    "AND mode = :mode AND relation = 'chat_sessions'::regclass)"
                ),
                {"holder": holder, "mode": mode},
            )
        ).scalar_one()
        return held


async def _stored_row(engine: AsyncEngine, tenant: str, session_id: str) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT metadata, updated_at FROM chat_sessions "
                    "WHERE tenant_id = :t AND session_id = :s"
                ),
                {"t": tenant, "s": session_id},
            )
        ).one()
        return tuple(row)


def _close(session_id: str) -> pb.UpdateSessionStatusRequest:
    return pb.UpdateSessionStatusRequest(session_id=session_id, status=pb.SESSION_STATUS_CLOSED)


@asynccontextmanager
async def _own_server(
    database_url: str, **settings: Any
) -> AsyncIterator[pb_grpc.SessionMonitoringStub]:
    """A server of our own with `settings` (a pool of 4 unless they say otherwise) and a stub."""
    settings = {"db_pool_size": 4, "db_pool_timeout": 5.0, **settings}
    async with (
        serving(database_url, **settings) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        yield pb_grpc.SessionMonitoringStub(channel)


async def test_caller_deadline_cancels_a_read_blocked_on_a_table_lock(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    factory: Factory,
    tenant: str,
    issued_statements: list[str],
) -> None:
    await factory.session(tenant, "s-1")
    already_issued = len(issued_statements)
    async with _table_locked(engine) as holder:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListSessions(
                pb.ListSessionsRequest(), metadata=tenant_metadata(tenant), timeout=SHORT_DEADLINE
            )
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The answer came while the lock was still held, so the deadline (not the lock) ended it.
        assert await _holds_lock(engine, holder, "AccessExclusiveLock")
        # The read did reach PostgreSQL (and so had to wait on the lock) ...
        assert any("chat_sessions" in s for s in issued_statements[already_issued:])
        # ... and PostgreSQL stopped running it while the lock is still held.
        await _until_nothing_waits(engine, holder)
        assert await _holds_lock(engine, holder, "AccessExclusiveLock")


async def test_caller_deadline_cancels_a_blocked_update_which_never_applies(
    stub: pb_grpc.SessionMonitoringStub,
    engine: AsyncEngine,
    factory: Factory,
    tenant: str,
    issued_statements: list[str],
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    before = await _stored_row(engine, tenant, "s-1")
    already_issued = len(issued_statements)
    async with _row_locked(engine, tenant, "s-1") as holder:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpdateSessionStatus(
                _close("s-1"), metadata=tenant_metadata(tenant), timeout=SHORT_DEADLINE
            )
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await _holds_lock(engine, holder, "RowShareLock")
        assert any("UPDATE chat_sessions" in s for s in issued_statements[already_issued:])
        await _until_nothing_waits(engine, holder)
        assert await _holds_lock(engine, holder, "RowShareLock")
    # Nothing is left queued behind the lock, so releasing it cannot let the update through.
    assert await _stored_row(engine, tenant, "s-1") == before


async def test_an_update_racing_a_writer_that_sets_the_same_status_reports_what_it_committed(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    # Another service closes the session in a transaction still open when our call arrives. Our
    # UPDATE waits for it, then finds nothing to change; the session it returns must be the one
    # that writer committed, not the active one of the snapshot our statement started with.
    await factory.session(tenant, "s-1", metadata={"status": "active", "note": "kept"})
    writer_end_time = "2024-05-01T10:00:00.000000Z"
    async with engine.connect() as writer:
        await writer.execute(text(f"SET LOCAL lock_timeout = '{HOLDER_LOCK_TIMEOUT}'"))
        await writer.execute(
            text(
                "UPDATE chat_sessions SET metadata = metadata || "
                "jsonb_build_object('status', 'closed', 'endTime', CAST(:end AS text)) "
                "WHERE tenant_id = :t AND session_id = 's-1'"
            ),
            {"t": tenant, "end": writer_end_time},
        )
        holder = await _pid(writer)
        call = asyncio.ensure_future(
            stub.UpdateSessionStatus(_close("s-1"), metadata=tenant_metadata(tenant), timeout=10)
        )
        await _until_waiting(engine, holder)
        await writer.commit()
        reply = await call
    assert reply.session.status == pb.SESSION_STATUS_CLOSED
    assert reply.session.end_time.ToJsonString() == "2024-05-01T10:00:00Z"
    # The writer's endTime stands: our call changed nothing.
    assert await factory.metadata(tenant, "s-1") == {
        "status": "closed",
        "note": "kept",
        "endTime": writer_end_time,
    }


async def test_an_update_to_the_status_a_session_already_has_does_not_wait_on_a_writers_lock(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    # The session is already closed in our snapshot: the call takes effect there and answers at
    # once, even while another transaction holds the row (a locking read would wait for it).
    await factory.session(tenant, "s-1", metadata={"status": "closed", "endTime": "2024-05-01"})
    async with _row_locked(engine, tenant, "s-1"):
        reply = await stub.UpdateSessionStatus(
            _close("s-1"), metadata=tenant_metadata(tenant), timeout=SHORT_DEADLINE
        )
    assert reply.session.status == pb.SESSION_STATUS_CLOSED
    assert reply.session.end_time.ToJsonString() == "2024-05-01T00:00:00Z"


async def test_server_deadline_ceiling_ends_a_call_without_a_deadline(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    before = await _stored_row(engine, tenant, "s-1")
    async with (
        _own_server(database_url, default_deadline=0.5) as own_stub,
        _row_locked(engine, tenant, "s-1") as holder,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await own_stub.UpdateSessionStatus(_close("s-1"), metadata=tenant_metadata(tenant))
        result = failure(raised.value)
        assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert result.reason == errors.REASON_DEADLINE_EXCEEDED
        assert result.message == errors.MESSAGE_DEADLINE_EXCEEDED
        assert await _holds_lock(engine, holder, "RowShareLock")
        await _until_nothing_waits(engine, holder)
    assert await _stored_row(engine, tenant, "s-1") == before


async def test_cancelling_a_call_cancels_its_blocked_query(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    before = await _stored_row(engine, tenant, "s-1")
    async with _row_locked(engine, tenant, "s-1") as holder:
        call = stub.UpdateSessionStatus(_close("s-1"), metadata=tenant_metadata(tenant))
        await _until_waiting(engine, holder)
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await call.code() == grpc.StatusCode.CANCELLED
        await _until_nothing_waits(engine, holder)
        assert await _holds_lock(engine, holder, "RowShareLock")
    assert await _stored_row(engine, tenant, "s-1") == before


async def test_calls_beyond_max_concurrent_rpcs_are_refused_while_one_is_in_flight(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    async with _own_server(database_url, max_concurrent_rpcs=1) as own_stub:
        async with _row_locked(engine, tenant, "s-1") as holder:
            in_flight = own_stub.UpdateSessionStatus(
                _close("s-1"), metadata=tenant_metadata(tenant)
            )
            await _until_waiting(engine, holder)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await own_stub.ListSessions(
                    pb.ListSessionsRequest(), metadata=tenant_metadata(tenant), timeout=WAIT_LIMIT
                )
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The limit is on concurrency: once the lock is gone both kinds of call go through.
        finished = await in_flight
        assert finished.session.status == pb.SESSION_STATUS_CLOSED
        listed = await own_stub.ListSessions(
            pb.ListSessionsRequest(), metadata=tenant_metadata(tenant)
        )
        assert [s.session_id for s in listed.sessions] == ["s-1"]


async def test_a_call_finding_no_free_database_connection_gets_database_busy(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    # A slow health probe interval keeps the probe off the single pooled connection.
    async with _own_server(
        database_url, db_pool_size=1, db_pool_timeout=0.2, health_check_interval=60
    ) as own_stub:
        async with _row_locked(engine, tenant, "s-1") as holder:
            in_flight = own_stub.UpdateSessionStatus(
                _close("s-1"), metadata=tenant_metadata(tenant)
            )
            await _until_waiting(engine, holder)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await own_stub.GetSessionDetail(
                    pb.GetSessionDetailRequest(session_id="s-1"),
                    metadata=tenant_metadata(tenant),
                    timeout=WAIT_LIMIT,
                )
            result = failure(raised.value)
            assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert result.reason == errors.REASON_DATABASE_BUSY
            assert result.message == errors.MESSAGE_DATABASE_BUSY
        finished = await in_flight
        assert finished.session.status == pb.SESSION_STATUS_CLOSED


async def test_connections_the_database_closed_while_idle_are_replaced_without_failing_calls(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    request = pb.ListSessionsRequest()
    async with engine.connect() as conn:
        started = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    async with _own_server(database_url, db_pool_size=2, health_check_interval=60) as own_stub:
        # Two calls in flight at once leave up to two connections idle in the pool.
        await asyncio.gather(
            *(own_stub.ListSessions(request, metadata=tenant_metadata(tenant)) for _ in range(2))
        )
        async with engine.connect() as conn:
            # This server's connections (the only ones opened since it started) are closed by
            # the database, as in a restart.
            terminated = (
                await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :app AND backend_start > :started "
                        "AND pid <> pg_backend_pid()"
                    ),
                    {"app": APPLICATION_NAME, "started": started},
                )
            ).scalar_one()
        # Every serving connection this server opened (one or two, as the calls overlapped),
        # and any other server of the suite opened meanwhile (it reconnects the same way).
        assert terminated >= 1
        await asyncio.sleep(0.2)  # the closed sockets are noticed by the event loop
        for _ in range(3):
            listed = await own_stub.ListSessions(request, metadata=tenant_metadata(tenant))
            assert [s.session_id for s in listed.sessions] == ["s-1"]


async def test_a_request_above_the_size_limit_is_refused_by_grpc(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="x" * 1_000_000),
            metadata=tenant_metadata(tenant),
        )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_large_request_under_the_size_limit_gets_a_precise_invalid_argument(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="x" * 60_000),
            metadata=tenant_metadata(tenant),
        )
    result = failure(raised.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.reason == errors.REASON_INVALID_ARGUMENT
    assert list(result.field_violations) == ["session_id"]


@asynccontextmanager
async def _conflicting_updates(
    engine: AsyncEngine, tenant: str, *, failures: int
) -> AsyncIterator[str]:
    """Make the first `failures` updates of `tenant`'s sessions fail with a serialization error
    (SQLSTATE 40001); yield the sequence that counts the attempts.

    A sequence, not a counter row: the failing attempt's transaction is rolled back, which would
    undo a row update, while nextval() survives the rollback.
    """
    assert TENANT_ID.fullmatch(tenant)  # interpolated into DDL below
    suffix = uuid.uuid4().hex[:12]
    counter, function, trigger = (f"conflict_{kind}_{suffix}" for kind in ("n", "fn", "trg"))
    ddl = [
        f"CREATE SEQUENCE {counter}",
        f"""CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('{counter}') <= {failures} THEN
                RAISE EXCEPTION USING ERRCODE = '40001';
              END IF;
              RETURN NEW;
            END $$""",
        f"""CREATE TRIGGER {trigger} BEFORE UPDATE ON chat_sessions FOR EACH ROW
            WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION {function}()""",
    ]
    try:
        async with engine.begin() as conn:
            for statement in ddl:
                await conn.exec_driver_sql(statement)
        yield counter
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON chat_sessions")
            await conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function}()")
            await conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {counter}")


async def _attempts(engine: AsyncEngine, counter: str) -> int:
    async with engine.connect() as conn:
        count: int = (
            await conn.exec_driver_sql(
                f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {counter}"  # noqa: S608
            )
        ).scalar_one()
        return count


async def test_an_update_that_conflicts_once_is_retried_and_succeeds(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    async with _conflicting_updates(engine, tenant, failures=1) as counter:
        response = await stub.UpdateSessionStatus(_close("s-1"), metadata=tenant_metadata(tenant))
        assert response.session.status == pb.SESSION_STATUS_CLOSED
        assert await _attempts(engine, counter) == 2
    stored_metadata, _ = await _stored_row(engine, tenant, "s-1")
    assert stored_metadata["status"] == "closed"


async def test_an_update_that_keeps_conflicting_ends_aborted_after_every_attempt(
    stub: pb_grpc.SessionMonitoringStub, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1", metadata={"status": "active"})
    before = await _stored_row(engine, tenant, "s-1")
    async with _conflicting_updates(engine, tenant, failures=1_000_000) as counter:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpdateSessionStatus(_close("s-1"), metadata=tenant_metadata(tenant))
        result = failure(raised.value)
        assert result.code == grpc.StatusCode.ABORTED
        assert result.reason == errors.REASON_CONFLICT
        assert result.message == errors.MESSAGE_CONFLICT
        assert await _attempts(engine, counter) == service.ATTEMPTS
    assert await _stored_row(engine, tenant, "s-1") == before
