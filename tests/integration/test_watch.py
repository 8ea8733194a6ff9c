"""WatchSessions through a real server: every writer's changes, in order, resumable, filtered
as ListSessions filters, and the ways a stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.app import App
from server.data import change_log
from server.data.engine import APPLICATION_NAME, asyncpg_dsn
from server.data.migrate import upgrade_to_head
from tests.factories import BASE_TIME, Factory, tenant_metadata
from tests.helpers import failure, serving
from tests.watching import Watch, watching

ADDED = pb.WATCH_EVENT_TYPE_SESSION_ADDED
UPDATED = pb.WATCH_EVENT_TYPE_SESSION_UPDATED
REMOVED = pb.WATCH_EVENT_TYPE_SESSION_REMOVED
MESSAGE = pb.WATCH_EVENT_TYPE_MESSAGE_ADDED
BOOKMARK = pb.WATCH_EVENT_TYPE_BOOKMARK

INSERT_SESSION = (
    "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, metadata, created_at, "
    "updated_at) VALUES ($1, $2, $3, $4::jsonb, $5, $5)"
)
INSERT_MESSAGE = (
    "INSERT INTO chat_messages (tenant_id, session_id, role, content, created_at) "
    "VALUES ($1, $2, $3, 'hello', $4) RETURNING id"
)


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another service's connection, writing plain SQL."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    yield connection
    await connection.close()


def kinds(events: list[pb.WatchSessionsResponse]) -> list[tuple[int, str]]:
    """(type, session id) of each event."""
    return [(event.type, event.session.session_id) for event in events]


async def test_changes_by_other_writers_and_by_the_service_arrive_in_commit_order(
    stub: pb_grpc.SessionMonitoringStub, writer: asyncpg.Connection, tenant: str
) -> None:
    async with watching(stub, tenant) as watch:
        await writer.execute(INSERT_SESSION, tenant, "s-1", "web", None, BASE_TIME)
        message_id = await writer.fetchval(INSERT_MESSAGE, tenant, "s-1", "user", BASE_TIME)
        await stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_CLOSED),
            metadata=tenant_metadata(tenant),
        )
        await writer.execute("DELETE FROM chat_sessions WHERE tenant_id = $1", tenant)
        events = await watch.changes_count(4)
    assert kinds(events) == [(ADDED, "s-1"), (MESSAGE, "s-1"), (UPDATED, "s-1"), (REMOVED, "s-1")]
    added, message, updated, removed = events
    assert added.session.status == pb.SESSION_STATUS_ACTIVE
    assert added.session.channel_type == "web"
    assert message.message.id == message_id
    assert message.message.role == "user"
    assert message.message.content == ""  # content is not sent
    assert updated.session.status == pb.SESSION_STATUS_CLOSED
    assert updated.session.HasField("end_time")
    assert removed.session.status == pb.SESSION_STATUS_CLOSED  # its last state
    tokens = [event.resume_token for event in events]
    assert len(set(tokens)) == 4
    assert all(tokens)
    assert all(event.HasField("commit_time") for event in events)


async def test_a_transaction_arrives_whole_and_a_session_made_and_dropped_in_it_not_at_all(
    stub: pb_grpc.SessionMonitoringStub, writer: asyncpg.Connection, tenant: str
) -> None:
    async with watching(stub, tenant) as watch:
        async with writer.transaction():
            await writer.execute(INSERT_SESSION, tenant, "a", "web", None, BASE_TIME)
            await writer.execute(INSERT_SESSION, tenant, "gone", "web", None, BASE_TIME)
            await writer.fetchval(INSERT_MESSAGE, tenant, "a", "user", BASE_TIME)
            await writer.execute(
                'UPDATE chat_sessions SET metadata = \'{"status": "closed"}\' '
                "WHERE tenant_id = $1 AND session_id = 'a'",
                tenant,
            )
            await writer.execute(
                "DELETE FROM chat_sessions WHERE tenant_id = $1 AND session_id = 'gone'", tenant
            )
        await writer.execute(INSERT_SESSION, tenant, "b", "web", None, BASE_TIME)
        events = await watch.changes_count(3)
    # One change per session per transaction, showing its state at commit.
    assert kinds(events) == [(ADDED, "a"), (MESSAGE, "a"), (ADDED, "b")]
    assert events[0].session.status == pb.SESSION_STATUS_CLOSED


async def test_a_change_drawn_early_and_committed_late_is_not_skipped(
    stub: pb_grpc.SessionMonitoringStub, database_url: str, writer: asyncpg.Connection, tenant: str
) -> None:
    late = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with watching(stub, tenant) as watch:
            transaction = late.transaction()
            await transaction.start()
            await late.execute(INSERT_SESSION, tenant, "late", "web", None, BASE_TIME)
            await writer.execute(INSERT_SESSION, tenant, "early", "web", None, BASE_TIME)
            await watch.changes_count(1)
            await transaction.commit()
            events = await watch.changes_count(2)
    finally:
        await late.close()
    assert kinds(events) == [(ADDED, "early"), (ADDED, "late")]


async def test_resuming_from_any_token_continues_exactly_after_it(
    stub: pb_grpc.SessionMonitoringStub, writer: asyncpg.Connection, tenant: str
) -> None:
    async with watching(stub, tenant) as watch:
        for index in range(6):
            await writer.execute(INSERT_SESSION, tenant, f"s-{index}", "web", None, BASE_TIME)
        events = await watch.changes_count(6)
    for cut in range(6):
        async with watching(stub, tenant, resume_token=events[cut].resume_token) as resumed:
            rest = await resumed.changes_count(5 - cut)
            await asyncio.sleep(0.2)  # nothing more comes
            assert kinds(resumed.changes) == kinds(events[cut + 1 :])
    assert kinds(rest) == []  # the last token resumes after everything


async def test_list_then_watch_from_the_pages_token_misses_and_repeats_nothing(
    stub: pb_grpc.SessionMonitoringStub,
    database_url: str,
    writer: asyncpg.Connection,
    tenant: str,
) -> None:
    for index in range(5):
        await writer.execute(INSERT_SESSION, tenant, f"old-{index}", "web", None, BASE_TIME)
    # A transaction open while the page is read, committed after: the page cannot show it, the
    # watch must.
    open_writer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        transaction = open_writer.transaction()
        await transaction.start()
        await open_writer.execute(INSERT_SESSION, tenant, "open", "web", None, BASE_TIME)
        page = await stub.ListSessions(
            pb.ListSessionsRequest(page_size=100), metadata=tenant_metadata(tenant)
        )
        await transaction.commit()
    finally:
        await open_writer.close()
    await writer.execute(INSERT_SESSION, tenant, "after", "web", None, BASE_TIME)
    assert {session.session_id for session in page.sessions} == {f"old-{i}" for i in range(5)}
    async with watching(stub, tenant, resume_token=page.watch_token) as watch:
        await watch.changes_count(2)
        await asyncio.sleep(0.3)
    assert kinds(watch.changes) == [(ADDED, "open"), (ADDED, "after")]


async def test_send_initial_streams_what_matches_then_a_bookmark_then_the_changes(
    stub: pb_grpc.SessionMonitoringStub,
    writer: asyncpg.Connection,
    factory: Factory,
    tenant: str,
) -> None:
    await factory.sessions(tenant, 3, step=timedelta(hours=1))
    await writer.execute(INSERT_SESSION, tenant, "closed", "web", '{"status": "closed"}', BASE_TIME)
    request = {"send_initial": True, "status": pb.SESSION_STATUS_ACTIVE}
    async with watching(stub, tenant, **request) as watch:
        initial = list(watch.events)
        await writer.execute(INSERT_SESSION, tenant, "new", "web", None, BASE_TIME)
        await watch.changes_count(4)
    assert [event.type for event in initial] == [ADDED] * 3 + [BOOKMARK]
    assert initial[-1].initial_events_end
    assert kinds(watch.changes)[-1] == (ADDED, "new")


async def test_a_session_that_stops_or_starts_matching_is_removed_or_added(
    stub: pb_grpc.SessionMonitoringStub, writer: asyncpg.Connection, tenant: str
) -> None:
    await writer.execute(INSERT_SESSION, tenant, "s", "web", None, BASE_TIME)
    async with (
        watching(stub, tenant, status=pb.SESSION_STATUS_ACTIVE) as active,
        watching(stub, tenant, status=pb.SESSION_STATUS_CLOSED) as closed,
        watching(stub, tenant, channel_type="sms") as sms,
        watching(stub, tenant, session_id="other") as other,
    ):
        for status in (pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_ACTIVE):
            await stub.UpdateSessionStatus(
                pb.UpdateSessionStatusRequest(session_id="s", status=status),
                metadata=tenant_metadata(tenant),
            )
        await writer.fetchval(INSERT_MESSAGE, tenant, "s", "user", BASE_TIME)
        await writer.execute(
            "UPDATE chat_sessions SET channel_type = 'sms' WHERE tenant_id = $1", tenant
        )
        await active.changes_count(4)
        await closed.changes_count(2)
        await sms.changes_count(1)
        await asyncio.sleep(0.3)
    assert kinds(active.changes) == [(REMOVED, "s"), (ADDED, "s"), (MESSAGE, "s"), (UPDATED, "s")]
    assert kinds(closed.changes) == [(ADDED, "s"), (REMOVED, "s")]
    assert kinds(sms.changes) == [(ADDED, "s")]
    assert other.changes == []


async def test_tokens_of_another_tenant_other_filters_or_no_token_are_invalid(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    page = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(tenant))
    cases = [
        ("t-other", pb.WatchSessionsRequest(resume_token=page.watch_token), "another tenant"),
        (
            tenant,
            pb.WatchSessionsRequest(resume_token=page.watch_token, channel_type="web"),
            "other filters",
        ),
        (tenant, pb.WatchSessionsRequest(resume_token="junk"), "not a watch token"),  # noqa: S106
        (
            tenant,
            pb.WatchSessionsRequest(resume_token=page.next_page_token or "AwE", send_initial=True),
            "send_initial",
        ),
        (tenant, pb.WatchSessionsRequest(status=9), "status"),  # type: ignore[arg-type]
    ]
    for tenant_id, request, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.WatchSessions(request, metadata=tenant_metadata(tenant_id)):
                pass
        got = failure(raised.value)
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT, (expected, got)
        assert expected in (raised.value.details() or ""), (expected, raised.value.details())


async def test_a_token_older_than_the_retention_window_is_expired(
    stub: pb_grpc.SessionMonitoringStub,
    grpc_app: App,
    writer: asyncpg.Connection,
    tenant: str,
) -> None:
    async with watching(stub, tenant) as watch:
        await writer.execute(INSERT_SESSION, tenant, "s", "web", None, BASE_TIME)
        await writer.execute(INSERT_SESSION, tenant, "pruned", "web", None, BASE_TIME)
        event, _ = await watch.changes_count(2)
    await _prune_all(grpc_app)  # so the change after the token is gone
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.WatchSessions(
            pb.WatchSessionsRequest(resume_token=event.resume_token),
            metadata=tenant_metadata(tenant),
        ):
            pass
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "WATCH_TOKEN_EXPIRED"


@pytest.fixture
async def grpc_app(database_url: str) -> AsyncIterator[App]:
    """A server of the test's own (pruning through its folder's connection)."""
    async with serving(database_url) as app:
        yield app


async def _own_stub(app: App) -> tuple[grpc.aio.Channel, pb_grpc.SessionMonitoringStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return channel, pb_grpc.SessionMonitoringStub(channel)


async def _until_caught_up(app: App) -> None:
    """Until the server's feed has read everything the writers committed."""
    async with asyncio.timeout(10):
        while True:
            await app.fold_counters()
            state = await change_log.log_state(app.maintenance)
            if app.feed.position == state.last_position:
                return
            await asyncio.sleep(0.05)


async def _read_to_end(
    call: grpc.aio.UnaryStreamCall[pb.WatchSessionsRequest, pb.WatchSessionsResponse],
    into: list[pb.WatchSessionsResponse],
) -> None:
    async with asyncio.timeout(20):
        while (response := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
            into.append(response)  # type: ignore[arg-type]  # EOF is not a response


SLOW_BATCHES = 200


async def test_a_client_that_falls_behind_gets_resource_exhausted_with_a_token_that_resumes(
    database_url: str, writer: asyncpg.Connection, tenant: str
) -> None:
    async with serving(database_url, watch_buffer=5) as app:
        # No window growth (BDP probing): the server's writes wait once 64 KiB are in flight,
        # well before the ~300 KB of events below are sent.
        options = [("grpc.http2.bdp_probe", 0)]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=options)
        stub = pb_grpc.SessionMonitoringStub(channel)
        async with channel:
            call = stub.WatchSessions(pb.WatchSessionsRequest(), metadata=tenant_metadata(tenant))
            first = await call.read()  # the start bookmark; then it reads nothing for a while
            assert first.type == BOOKMARK
            for batch in range(SLOW_BATCHES):  # transactions of 10, each more than the buffer
                await writer.execute(
                    "INSERT INTO chat_sessions (tenant_id, session_id, created_at, updated_at) "
                    "SELECT $1, 's-' || lpad(CAST($2 * 10 + i AS text), 5, '0'), $3, $3 "
                    "FROM generate_series(0, 9) AS i",
                    tenant,
                    batch,
                    BASE_TIME,
                )
            seen: list[pb.WatchSessionsResponse] = []
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _read_to_end(call, seen)
            got = failure(raised.value)
            assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert got.reason == "WATCH_TOO_SLOW"
            token = got.error_metadata["resume_token"]
            await _until_caught_up(app)  # else the resumed stream, buffer 5, overflows too
            async with watching(stub, tenant, resume_token=token) as resumed:
                total = SLOW_BATCHES * 10
                await resumed.changes_count(total - len([s for s in seen if s.type != BOOKMARK]))
            ids = [s.session.session_id for s in seen if s.type != BOOKMARK]
            ids += [event.session.session_id for event in resumed.changes]
            assert ids == [f"s-{index:05}" for index in range(total)]


async def test_a_stream_ends_ok_with_a_bookmark_at_its_maximum_age_and_heartbeats_before(
    database_url: str, tenant: str
) -> None:
    async with serving(database_url, watch_max_age=1.5, watch_bookmark_interval=0.4) as app:
        channel, stub = await _own_stub(app)
        async with channel:
            watch = Watch(stub, tenant, pb.WatchSessionsRequest())
            async with asyncio.timeout(10):
                await watch.ended.wait()
    assert watch.error is None
    assert len(watch.events) >= 3  # the start, heartbeats, the last one
    assert all(event.type == BOOKMARK for event in watch.events)


async def test_server_shutdown_ends_streams_ok_with_a_last_bookmark_promptly(
    database_url: str, tenant: str
) -> None:
    async with serving(database_url) as app:
        channel, stub = await _own_stub(app)
        async with channel, watching(stub, tenant) as watch:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await app.stop(5)
            async with asyncio.timeout(5):
                await watch.ended.wait()
            assert loop.time() - started < 2
    assert watch.error is None
    assert [event.type for event in watch.events] == [BOOKMARK, BOOKMARK]


async def test_truncate_ends_every_stream_with_an_expired_history(
    private_database_url: str, tenant: str
) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    connection = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        async with serving(private_database_url) as app:
            channel, stub = await _own_stub(app)
            async with watching(stub, tenant) as watch:
                await connection.execute(INSERT_SESSION, tenant, "s", "web", None, BASE_TIME)
                (event,) = await watch.changes_count(1)
                await connection.execute("TRUNCATE chat_sessions CASCADE")
                async with asyncio.timeout(10):
                    await watch.ended.wait()
            assert watch.error is not None
            assert failure(watch.error).reason == "WATCH_TOKEN_EXPIRED"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in stub.WatchSessions(
                    pb.WatchSessionsRequest(resume_token=event.resume_token),
                    metadata=tenant_metadata(tenant),
                ):
                    pass
            assert failure(raised.value).reason == "WATCH_TOKEN_EXPIRED"
            await channel.close(None)
    finally:
        await connection.close()


class HeldFeeds:
    """Holds back the change-log reads of chosen servers' feeds (their streams' own catch-up
    reads go on) until released: a reader that lags, or is stopped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._released = asyncio.Event()
        self._held: list[object] = []
        read_changes = change_log.read_changes

        async def held_back(database: Any, **options: Any) -> list[change_log.LoggedChange]:
            if database in self._held and options.get("tenant_id") is None:
                await self._released.wait()
            return await read_changes(database, **options)

        monkeypatch.setattr(change_log, "read_changes", held_back)

    def hold(self, app: App) -> None:
        """Hold back `app`'s feed from now on."""
        self._held.append(app.feed.database)

    def release(self) -> None:
        """Let every held feed read again."""
        self._released.set()


async def test_a_token_ahead_of_this_instances_reader_repeats_nothing_when_it_catches_up(
    database_url: str,
    stub: pb_grpc.SessionMonitoringStub,
    writer: asyncpg.Connection,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Instance B's reader lags behind a token from instance A: B subscribes the stream below
    the token's position, and its reader then hands over changes the stream has passed."""
    held = HeldFeeds(monkeypatch)
    async with serving(database_url) as instance_b:
        held.hold(instance_b)
        async with watching(stub, tenant) as watch:
            for index in range(3):
                await writer.execute(INSERT_SESSION, tenant, f"s-{index}", "web", None, BASE_TIME)
            events = await watch.changes_count(3)
        channel, stub_b = await _own_stub(instance_b)
        async with channel, watching(stub_b, tenant, resume_token=events[-1].resume_token) as b:
            held.release()
            await writer.execute(INSERT_SESSION, tenant, "after", "web", None, BASE_TIME)
            await b.changes_count(1)
            await asyncio.sleep(0.3)
    assert kinds(b.changes) == [(ADDED, "after")]


async def test_a_client_that_stops_reading_its_initial_set_ends_it_and_holds_nothing_open(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    """The initial set is read in an open transaction: one stuck client must not keep it open
    (it would hold back vacuum and queue another service's TRUNCATE, and its writers behind)."""
    await factory.sessions(tenant, 3000, step=timedelta(seconds=1))
    async with engine.connect() as connection:
        started = await connection.scalar(text("SELECT clock_timestamp()"))
    async with serving(database_url, watch_initial_idle_timeout=0.5) as app:
        # No window growth (BDP probing): the server's writes wait once 64 KiB are in flight.
        options = [("grpc.http2.bdp_probe", 0)]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=options)
        stub = pb_grpc.SessionMonitoringStub(channel)
        async with channel:
            call = stub.WatchSessions(
                pb.WatchSessionsRequest(send_initial=True), metadata=tenant_metadata(tenant)
            )
            assert (await call.read()).type == ADDED  # then it reads nothing for a while
            await asyncio.sleep(2)
            async with engine.connect() as connection:
                idle = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                        "AND application_name = :app AND backend_start > :started"
                    ),
                    {"app": APPLICATION_NAME, "started": started},
                )
            assert idle == 0
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _read_to_end(call, [])
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED, got
    assert got.reason == "WATCH_TOO_SLOW"


async def test_a_reader_stopped_for_longer_than_the_retention_expires_its_streams(
    database_url: str,
    writer: asyncpg.Connection,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = HeldFeeds(monkeypatch)
    async with serving(database_url) as app:
        channel, stub = await _own_stub(app)
        async with channel, watching(stub, tenant) as watch:
            held.hold(app)
            await writer.execute(INSERT_SESSION, tenant, "pruned", "web", None, BASE_TIME)
            await _until_folded(app)
            await _prune_all(app)
            await writer.execute(INSERT_SESSION, tenant, "kept", "web", None, BASE_TIME)
            await _until_folded(app)
            held.release()
            async with asyncio.timeout(10):
                await watch.ended.wait()
    assert watch.changes == []
    assert watch.error is not None
    assert failure(watch.error).reason == "WATCH_TOKEN_EXPIRED"


async def _until_folded(app: App) -> None:
    """Until a fold of this test's own (after the writes it follows) held the lock."""
    async with asyncio.timeout(10):
        while True:
            folded = await app.fold_counters()
            if folded is not None and folded.held:
                return
            await asyncio.sleep(0.01)


async def _prune_all(app: App) -> None:
    """Prune everything logged so far (retrying while the folder holds the lock)."""
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        while True:
            if await change_log.prune(app.maintenance, retention=0.001) is not None:
                return
            await asyncio.sleep(0.01)


async def test_open_streams_count_apart_from_calls_and_never_crowd_out_health(
    database_url: str, tenant: str
) -> None:
    async with serving(database_url, max_concurrent_rpcs=1, watch_max_streams=2) as app:
        channel, stub = await _own_stub(app)
        async with channel, watching(stub, tenant), watching(stub, tenant):
            listed = await stub.ListSessions(
                pb.ListSessionsRequest(), metadata=tenant_metadata(tenant)
            )
            assert listed.pagination.total == 0
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            third = Watch(stub, tenant, pb.WatchSessionsRequest())
            async with asyncio.timeout(10):
                await third.ended.wait()
            assert third.error is not None
            got = failure(third.error)
            assert (got.code, got.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")


async def test_a_cancelled_stream_leaves_nothing_subscribed(database_url: str, tenant: str) -> None:
    async with serving(database_url) as app:
        channel, stub = await _own_stub(app)
        async with channel:
            async with watching(stub, tenant), watching(stub, tenant, send_initial=True):
                assert app.feed.streams == 2
            async with asyncio.timeout(10):
                while True:
                    if app.feed.streams == 0:
                        return
                    await asyncio.sleep(0.01)
