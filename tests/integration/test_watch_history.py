"""The etcd watch guarantees, checked over a history recorded from many concurrent writers.

Writers (plain SQL from their own connections, and this service's UpdateSessionStatus) run
random transactions: new sessions with messages, messages, status and channel changes, deletes,
multi-statement transactions over two sessions, and transactions held open while others
commit. Each writer owns its sessions, so it knows exactly which events each of its committed
transactions must produce, in which order. Meanwhile streams of every tenant are cancelled and
resumed, the server is replaced by another instance, and PostgreSQL is restarted.

The validators, after etcd's robustness tests (tests/robustness/validate in etcd-io/etcd):
- ordered: positions only grow, and every writer's transactions arrive in its commit order;
- unique: no event twice, across every resume;
- atomic: a transaction's events arrive back to back;
- reliable: every committed transaction's events arrive (the stream is exactly the history);
- resumable: a stream resumed from any event's token, on another instance, yields exactly the
  rest of the history;
- bookmarkable: a stream resumed from a bookmark's token yields exactly what followed it.
A filtered stream (status ACTIVE) is replayed as a set and must end equal to ListSessions.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.app import App
from server.data.embedded import start_embedded_postgres
from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from tests.factories import BASE_TIME, tenant_metadata
from tests.helpers import serving
from tests.postgres_control import DedicatedPostgres
from tests.watching import Watch

TENANTS = ("tenant-a", "tenant-b", "tenant-c")
WRITERS_PER_TENANT = 3
TRANSACTIONS_PER_PHASE = 12  # per writer, in each of the four phases
BOOKMARK = pb.WATCH_EVENT_TYPE_BOOKMARK
Expected = tuple[int, str, int]  # event type, session id, message id (0: none)


def position_of(token: str) -> int:
    """The log position a watch token carries (server.transport.watch_tokens' layout)."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return int(struct.unpack_from(">q", raw, 18)[0])


def observed(event: pb.WatchSessionsResponse) -> Expected:
    """What the validators compare of an event."""
    return (event.type, event.session.session_id, event.message.id)


@dataclass
class Writer:
    """One writer of one tenant: its sessions, and each committed transaction's events."""

    name: str
    tenant_id: str
    rng: random.Random
    sessions: dict[str, str] = field(default_factory=dict)  # id -> stored status
    committed: list[list[Expected]] = field(default_factory=list)
    serial: int = 0

    def new_id(self) -> str:
        self.serial += 1
        return f"{self.name}-{self.serial}"


async def _message(connection: asyncpg.Connection, writer: Writer, session_id: str) -> Expected:
    message_id = await connection.fetchval(
        "INSERT INTO chat_messages (tenant_id, session_id, role, content, created_at) "
        "VALUES ($1, $2, 'user', 'hi', $3) RETURNING id",
        writer.tenant_id,
        session_id,
        BASE_TIME,
    )
    return (pb.WATCH_EVENT_TYPE_MESSAGE_ADDED, session_id, message_id)


async def _new_session(
    connection: asyncpg.Connection, writer: Writer, *, hold: float = 0.0
) -> list[Expected]:
    session_id = writer.new_id()
    events: list[Expected] = [(pb.WATCH_EVENT_TYPE_SESSION_ADDED, session_id, 0)]
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, created_at, "
            "updated_at) VALUES ($1, $2, 'web', $3, $3)",
            writer.tenant_id,
            session_id,
            BASE_TIME,
        )
        for _ in range(writer.rng.randrange(3)):
            events.append(await _message(connection, writer, session_id))
        await asyncio.sleep(hold)  # a late commit: others draw and commit meanwhile
    writer.sessions[session_id] = "active"
    return events


async def _sql_status(connection: asyncpg.Connection, writer: Writer, session_id: str) -> Expected:
    status = "closed" if writer.sessions[session_id] == "active" else "active"
    await connection.execute(
        "UPDATE chat_sessions SET metadata = jsonb_build_object('status', $3::text), "
        "updated_at = now() WHERE tenant_id = $1 AND session_id = $2",
        writer.tenant_id,
        session_id,
        status,
    )
    writer.sessions[session_id] = status
    return (pb.WATCH_EVENT_TYPE_SESSION_UPDATED, session_id, 0)


async def _transaction(
    connection: asyncpg.Connection, stub: pb_grpc.SessionMonitoringStub, writer: Writer
) -> list[Expected]:
    """One random transaction of `writer`; the events it produces, in order."""
    owned = sorted(writer.sessions)
    choice = writer.rng.random()
    if not owned or choice < 0.25:
        return await _new_session(connection, writer, hold=0.3 if choice < 0.03 else 0.0)
    session_id = writer.rng.choice(owned)
    if choice < 0.45:
        return [await _message(connection, writer, session_id)]
    if choice < 0.6:
        return [await _sql_status(connection, writer, session_id)]
    if choice < 0.75:
        status = writer.sessions[session_id] == "active"
        await stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(
                session_id=session_id,
                status=pb.SESSION_STATUS_CLOSED if status else pb.SESSION_STATUS_ACTIVE,
            ),
            metadata=tenant_metadata(writer.tenant_id),
            timeout=10,
        )
        writer.sessions[session_id] = "closed" if status else "active"
        return [(pb.WATCH_EVENT_TYPE_SESSION_UPDATED, session_id, 0)]
    if choice < 0.85 or len(owned) < 2:
        await connection.execute(
            "DELETE FROM chat_sessions WHERE tenant_id = $1 AND session_id = $2",
            writer.tenant_id,
            session_id,
        )
        del writer.sessions[session_id]
        return [(pb.WATCH_EVENT_TYPE_SESSION_REMOVED, session_id, 0)]
    other = writer.rng.choice([owned_id for owned_id in owned if owned_id != session_id])
    async with connection.transaction():
        events = [
            await _sql_status(connection, writer, session_id),
            await _sql_status(connection, writer, other),
            await _message(connection, writer, session_id),
        ]
    return events


async def _write(dsn: str, stub: pb_grpc.SessionMonitoringStub, writer: Writer) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for _ in range(TRANSACTIONS_PER_PHASE):
            events = await _transaction(connection, stub, writer)
            writer.committed.append(events)
    finally:
        await connection.close()


def check_history(events: list[Expected], writers: list[Writer]) -> None:
    """Ordered, unique, atomic and reliable: `events` is exactly the writers' committed
    transactions, each back to back, each writer's in its commit order."""
    owner = {session: writer for writer in writers for session in _sessions_of(writer)}
    next_transaction = dict.fromkeys((writer.name for writer in writers), 0)
    at = 0
    while at < len(events):
        writer = owner[events[at][1]]
        index = next_transaction[writer.name]
        assert index < len(writer.committed), f"event {at} {events[at]}: more than was committed"
        transaction = writer.committed[index]
        got = events[at : at + len(transaction)]
        assert got == transaction, f"event {at}: {writer.name}'s transaction {index} {transaction}"
        next_transaction[writer.name] += 1
        at += len(transaction)
    for writer in writers:
        assert next_transaction[writer.name] == len(writer.committed), f"{writer.name}: lost"


def _sessions_of(writer: Writer) -> set[str]:
    return {session for transaction in writer.committed for _, session, _ in transaction}


@dataclass
class TenantStreams:
    """Everything one tenant's unfiltered streams delivered, in order, across resumes."""

    tenant_id: str
    responses: list[pb.WatchSessionsResponse] = field(default_factory=list)
    watch: Watch | None = None

    def start(self, stub: pb_grpc.SessionMonitoringStub, token: str) -> None:
        self.watch = Watch(stub, self.tenant_id, pb.WatchSessionsRequest(resume_token=token))

    async def stop(self) -> str:
        """End the stream (if it has not ended), keep what it sent; the token to resume from."""
        assert self.watch is not None
        if not self.watch.ended.is_set():
            await self.watch.close()
        assert self.watch.error is None or self.watch.error.code() == grpc.StatusCode.CANCELLED
        self.responses.extend(self.watch.events)
        return self.responses[-1].resume_token

    @property
    def changes(self) -> list[Expected]:
        return [observed(r) for r in self.responses if r.type != BOOKMARK]


@asynccontextmanager
async def _server(url: str) -> AsyncIterator[tuple[App, pb_grpc.SessionMonitoringStub]]:
    async with (
        serving(url, watch_bookmark_interval=0.5, db_pool_size=6) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        yield app, pb_grpc.SessionMonitoringStub(channel)


async def _list_token(
    stub: pb_grpc.SessionMonitoringStub,
    tenant_id: str,
    status: pb.SessionStatus = pb.SESSION_STATUS_UNSPECIFIED,
) -> str:
    page: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(status=status), metadata=tenant_metadata(tenant_id)
    )
    return page.watch_token


async def _phase(dsn: str, stub: pb_grpc.SessionMonitoringStub, writers: list[Writer]) -> None:
    await asyncio.gather(*(_write(dsn, stub, writer) for writer in writers))


async def _drained(app: App, streams: list[TenantStreams], writers: list[Writer]) -> None:
    """Until every stream has received every committed transaction's events."""
    for tenant in streams:
        expected = sum(
            len(t) for w in writers if w.tenant_id == tenant.tenant_id for t in w.committed
        )
        assert tenant.watch is not None
        have = len(tenant.changes)
        await tenant.watch.changes_count(expected - have, within=30)


async def test_streams_are_ordered_unique_atomic_reliable_resumable_and_bookmarkable(
    tmp_path: Path,
) -> None:
    url = await asyncio.to_thread(start_embedded_postgres, tmp_path)
    postgres = DedicatedPostgres(tmp_path / "postgres", url)
    await asyncio.to_thread(upgrade_to_head, url)
    dsn = asyncpg_dsn(url)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    writers = [
        Writer(f"{tenant}-w{index}", tenant, random.Random(seed + 10 * position + index))
        for position, tenant in enumerate(TENANTS)
        for index in range(WRITERS_PER_TENANT)
    ]
    streams = [TenantStreams(tenant) for tenant in TENANTS]
    try:
        async with AsyncExitStack() as stack:
            app, stub = await stack.enter_async_context(_server(url))
            filtered_token = await _list_token(stub, TENANTS[0], status=pb.SESSION_STATUS_ACTIVE)
            filtered = Watch(
                stub,
                TENANTS[0],
                pb.WatchSessionsRequest(
                    status=pb.SESSION_STATUS_ACTIVE, resume_token=filtered_token
                ),
            )
            for tenant in streams:
                tenant.start(stub, await _list_token(stub, tenant.tenant_id))
            await _phase(dsn, stub, writers)
            # Cancelled mid-way and resumed from the last token received.
            for tenant in streams:
                tenant.start(stub, await tenant.stop())
            await _phase(dsn, stub, writers)
            await _drained(app, streams, writers)
            filtered_events = list(filtered.events)
            # Another instance: the first one shuts down (its streams end with a bookmark).
            await stack.aclose()
            for tenant in streams:
                assert tenant.watch is not None
                async with asyncio.timeout(10):
                    await tenant.watch.ended.wait()
            app, stub = await stack.enter_async_context(_server(url))
            for tenant in streams:
                tenant.start(stub, await tenant.stop())
            filtered = Watch(
                stub,
                TENANTS[0],
                pb.WatchSessionsRequest(
                    status=pb.SESSION_STATUS_ACTIVE, resume_token=filtered_events[-1].resume_token
                ),
            )
            await _phase(dsn, stub, writers)
            await _drained(app, streams, writers)
            # A PostgreSQL restart under open streams: they carry on once it is back.
            await postgres.stop()
            await postgres.start()
            await _phase(dsn, stub, writers)
            await _drained(app, streams, writers)
            await asyncio.sleep(1.2)  # a heartbeat bookmark after the last event
            final = {}
            for tenant in streams:
                await tenant.stop()
                final[tenant.tenant_id] = tenant
            await filtered.close()
            filtered_events += filtered.events
            listed = await stub.ListSessions(
                pb.ListSessionsRequest(status=pb.SESSION_STATUS_ACTIVE, page_size=100),
                metadata=tenant_metadata(TENANTS[0]),
            )

            for tenant_id, tenant in final.items():
                positions = [position_of(r.resume_token) for r in tenant.responses]
                assert positions == sorted(positions), f"seed {seed}: positions went back"
                tenant_writers = [writer for writer in writers if writer.tenant_id == tenant_id]
                check_history(tenant.changes, tenant_writers)
                await _check_resumes(stub, tenant, rng, seed)
            _check_filtered(filtered_events, {s.session_id for s in listed.sessions}, seed)
    finally:
        if postgres.running:
            await postgres.stop()


async def _check_resumes(
    stub: pb_grpc.SessionMonitoringStub, tenant: TenantStreams, rng: random.Random, seed: int
) -> None:
    """Resumable and bookmarkable: from a few event tokens and every kind of bookmark, a new
    stream on this instance yields exactly what followed."""
    responses = tenant.responses
    events = [i for i, r in enumerate(responses) if r.type != BOOKMARK]
    bookmarks = [i for i, r in enumerate(responses) if r.type == BOOKMARK]
    for cut in [*rng.sample(events, 3), *rng.sample(bookmarks, min(3, len(bookmarks)))]:
        rest = [observed(r) for r in responses[cut + 1 :] if r.type != BOOKMARK]
        resumed = Watch(
            stub,
            tenant.tenant_id,
            pb.WatchSessionsRequest(resume_token=responses[cut].resume_token),
        )
        try:
            await resumed.changes_count(len(rest))
            await asyncio.sleep(0.2)
            assert [observed(r) for r in resumed.changes] == rest, f"seed {seed}: cut {cut}"
        finally:
            await resumed.close()


def _check_filtered(events: list[pb.WatchSessionsResponse], listed: set[str], seed: int) -> None:
    """Replayed as a set, the ACTIVE stream agrees with ListSessions, and never updates a
    session it has not added."""
    members: set[str] = set()
    for event in events:
        session_id = event.session.session_id
        if event.type == pb.WATCH_EVENT_TYPE_SESSION_ADDED:
            assert session_id not in members, f"seed {seed}: {session_id} added twice"
            members.add(session_id)
        elif event.type == pb.WATCH_EVENT_TYPE_SESSION_REMOVED:
            members.remove(session_id)
        elif event.type != BOOKMARK:
            assert session_id in members, f"seed {seed}: {event.type} of a non-member"
            assert event.type == pb.WATCH_EVENT_TYPE_MESSAGE_ADDED or (
                event.session.status == pb.SESSION_STATUS_ACTIVE
            )
    assert members == listed, f"seed {seed}"
