"""One WatchSessions stream: where it starts, catching up from the log, then following the
process's feed, and how it ends.

A stream starts at a position of the change log (now, a token's, or its initial snapshot's),
subscribes to the feed, reads the log itself up to where the feed stood when it subscribed,
then takes the feed's changes; positions it has passed are never shown again, so the switch
neither skips nor repeats. It ends only between two transactions' changes: on a TRUNCATE or an
expired start (FAILED_PRECONDITION), when its buffer overflowed (RESOURCE_EXHAUSTED with a
resume token), and, after a last BOOKMARK, at its maximum age or server shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.data import change_log
from server.data.change_log import LoggedChange
from server.data.rows import SessionRow, WatchStart
from server.data.statements import Database
from server.domain.filters import SessionFilters
from server.domain.watch import (
    KIND_MESSAGE,
    KIND_RESET,
    Event,
    Snapshot,
    WatchFilters,
    message_event,
)
from server.domain.watch import session_event as session_event_of
from server.transport import convert, watch_tokens
from server.transport.errors import (
    DatabaseUnavailableError,
    FieldViolation,
    WatchTokenExpiredError,
    WatchTooSlowError,
    invalid_argument,
)
from server.transport.validation import WatchQuery
from server.transport.watch_feed import ChangeFeed, Subscription

CATCH_UP_BATCH = 1000
_TYPES = {
    Event.ADDED: pb.WATCH_EVENT_TYPE_SESSION_ADDED,
    Event.UPDATED: pb.WATCH_EVENT_TYPE_SESSION_UPDATED,
    Event.REMOVED: pb.WATCH_EVENT_TYPE_SESSION_REMOVED,
    Event.MESSAGE: pb.WATCH_EVENT_TYPE_MESSAGE_ADDED,
}
AHEAD_OF_LOG = "is ahead of the change history: it was not issued by this database"


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How streams behave: buffer size (changes), heartbeat and maximum age (seconds)."""

    buffer: int
    bookmark_interval: float
    max_age: float
    initial_idle_timeout: float


class Watcher:
    """Serves WatchSessions streams from one feed."""

    def __init__(self, feed: ChangeFeed, database: Database, settings: WatchSettings) -> None:
        self._feed = feed
        self._database = database
        self._settings = settings
        self._encoded = EncodedEvents()

    def stream(
        self, query: WatchQuery, tenant_id: str
    ) -> AsyncIterator[pb.WatchSessionsResponse | bytes]:
        """The responses of one stream."""
        return _Stream(self, query, tenant_id).run()


class _Stream:
    def __init__(self, watcher: Watcher, query: WatchQuery, tenant_id: str) -> None:
        self._feed = watcher._feed
        self._database = watcher._database
        self._settings = watcher._settings
        self._encoded = watcher._encoded
        self._query = query
        self._tenant_id = tenant_id
        self._epoch = 0
        self._position = 0
        self._snapshot: Snapshot | None = None
        self._ends_at = time.monotonic() + self._settings.max_age

    def _token(self, position: int | None = None) -> str:
        point = watch_tokens.WatchPoint(
            self._epoch, self._position if position is None else position, self._snapshot
        )
        return watch_tokens.encode(point, self._query.scope)

    async def run(self) -> AsyncIterator[pb.WatchSessionsResponse | bytes]:
        state = await change_log.log_state(self._database)
        self._epoch = state.epoch
        start = self._query.start
        if start is not None:
            if start.epoch != state.epoch or start.position < state.oldest_resumable:
                raise WatchTokenExpiredError()
            if start.position > state.last_position:
                raise invalid_argument(FieldViolation("resume_token", AHEAD_OF_LOG))
            self._position, self._snapshot = start.position, start.snapshot
        else:
            # Now: what committed before this read is left out, even if not logged yet.
            self._position, self._snapshot = state.last_position, Snapshot.parse(state.snapshot)
        subscription = self._feed.subscribe(self._tenant_id, self._settings.buffer)
        if subscription is None:
            raise DatabaseUnavailableError()
        try:
            if self._query.send_initial:
                async for initial in self._initial():
                    yield initial
            else:
                yield self._bookmark()  # the stream's start: it is subscribed from here on
            async for change in self._catch_up(subscription.horizon):
                yield change
            async for change in self._follow(subscription):
                yield change
        finally:
            self._feed.unsubscribe(subscription)

    async def _initial(self) -> AsyncIterator[pb.WatchSessionsResponse]:
        try:
            async with change_log.initial_set(
                self._database,
                tenant_id=self._tenant_id,
                filters=self._query.filters,
                idle_timeout=self._settings.initial_idle_timeout,
            ) as initial:
                if initial.state.epoch != self._epoch:
                    raise WatchTokenExpiredError()
                self._position = initial.state.last_position
                self._snapshot = Snapshot.parse(initial.state.snapshot)
                token = self._token()
                async for row in initial.sessions:
                    yield _session_response(pb.WATCH_EVENT_TYPE_SESSION_ADDED, row, token)
        except change_log.InitialSetAbandonedError:
            raise WatchTooSlowError(
                "the client stopped reading the initial set; watch again (or list, then watch "
                "from the list's watch_token)"
            ) from None
        yield self._bookmark(initial_events_end=True)

    async def _catch_up(self, horizon: int) -> AsyncIterator[pb.WatchSessionsResponse | bytes]:
        """The log from the stream's position up to where the feed stood at subscription. A
        TRUNCATE (or a prune) in that stretch shows as the oldest resumable position passing
        where it started."""
        started = self._position
        while self._position < horizon:
            changes = await change_log.read_changes(
                self._database,
                after=self._position,
                limit=CATCH_UP_BATCH,
                tenant_id=self._tenant_id,
            )
            changes = [change for change in changes if change.position <= horizon]
            if not changes:
                self._position = horizon
                break
            for response in self._changes(changes):
                yield response
        if (
            started < horizon
            and (await change_log.log_state(self._database)).oldest_resumable > started
        ):
            raise WatchTokenExpiredError()

    async def _follow(
        self, subscription: Subscription
    ) -> AsyncIterator[pb.WatchSessionsResponse | bytes]:
        queue = subscription.changes
        last_sent = time.monotonic()
        while True:
            if subscription.overflowed:
                raise WatchTooSlowError(metadata={"resume_token": self._token()})
            if subscription.expired:
                raise WatchTokenExpiredError()
            # Never between the parts of one transaction larger than a read, but on shutdown.
            aged = time.monotonic() >= self._ends_at and not subscription.mid_transaction
            if subscription.closing or (aged and not queue):
                if not queue:
                    self._position = max(self._position, subscription.horizon)
                yield self._bookmark()
                return
            if queue:
                # Whole transactions at a time: a stream never ends between their changes.
                batch = [queue.popleft()]
                while queue and queue[0].xid == batch[-1].xid:
                    batch.append(queue.popleft())
                for response in self._changes(batch):
                    last_sent = time.monotonic()
                    yield response
                continue
            self._position = max(self._position, subscription.horizon)
            subscription.wake.clear()
            wait = min(last_sent + self._settings.bookmark_interval, self._ends_at)
            try:
                async with asyncio.timeout(max(wait - time.monotonic(), 0)):
                    await subscription.wake.wait()
            except TimeoutError:
                if time.monotonic() < self._ends_at and not queue:
                    # Quiet streams are not woken by the feed: catch up with its horizon here.
                    self._position = max(self._position, subscription.horizon)
                    last_sent = time.monotonic()
                    yield self._bookmark()

    def _changes(self, changes: list[LoggedChange]) -> list[pb.WatchSessionsResponse | bytes]:
        """The responses for these changes (positions the stream passed are left out)."""
        responses: list[pb.WatchSessionsResponse | bytes] = []
        for change in changes:
            if change.position <= self._position:
                continue
            if change.kind == KIND_RESET:
                raise WatchTokenExpiredError(
                    "the chat tables were truncated: list again, then watch from the list's "
                    "watch_token"
                )
            self._position = change.position
            if self._snapshot is not None and self._snapshot.sees(change.xid):
                continue  # the list this stream started from already showed it
            response = self._response(change)
            if response is not None:
                responses.append(response)
        return responses

    def _response(self, change: LoggedChange) -> bytes | None:
        filters = self._query.filters
        if change.kind == KIND_MESSAGE:
            event = message_event(change.change.session_id, change.message_session, filters)
        else:
            event = session_event_of(change.change, filters)
        if event is None:
            return None
        # Fields may come in any order: the event as every stream sees it, then this stream's
        # token (server.transport.interceptors passes the bytes through).
        return self._encoded.event(change, _TYPES[event]) + resume_token_field(self._token())

    def _bookmark(self, *, initial_events_end: bool = False) -> pb.WatchSessionsResponse:
        response = pb.WatchSessionsResponse(
            type=pb.WATCH_EVENT_TYPE_BOOKMARK,
            resume_token=self._token(),
            initial_events_end=initial_events_end,
        )
        response.commit_time.GetCurrentTime()
        return response


def list_watch_token(tenant_id: str, filters: SessionFilters, start: WatchStart) -> str:
    """The watch token of a ListSessions page: bound to its status and channel_type."""
    scope = watch_tokens.watch_scope(
        tenant_id, WatchFilters(filters.status, filters.channel_type, None)
    )
    point = watch_tokens.WatchPoint(start.epoch, start.position, Snapshot.parse(start.snapshot))
    return watch_tokens.encode(point, scope)


class EncodedEvents:
    """Each change's event encoded once, however many streams send it (their tokens differ,
    so they are appended per stream). Bounded: the changes of the last few reads."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._events: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()

    def event(self, change: LoggedChange, event_type: pb.WatchEventType) -> bytes:
        """The serialized response for `change` as an event of `event_type`, but its token."""
        key = (change.position, event_type)
        encoded = self._events.get(key)
        if encoded is None:
            encoded = self._events[key] = _event(change, event_type).SerializeToString()
            if len(self._events) > self._size:
                self._events.popitem(last=False)
        return encoded


def _event(change: LoggedChange, event_type: pb.WatchEventType) -> pb.WatchSessionsResponse:
    response = pb.WatchSessionsResponse(type=event_type)
    if change.session is not None:
        convert.fill_session(response.session, change.session)
    else:
        response.session.session_id = change.change.session_id
        response.session.tenant_id = change.tenant_id
    if change.message is not None:
        convert.fill_message(response.message, change.message)
    convert.set_stored_time(response.commit_time, change.committed_key)
    return response


_RESUME_TOKEN_TAG = bytes([pb.WatchSessionsResponse.RESUME_TOKEN_FIELD_NUMBER << 3 | 2])


def resume_token_field(token: str) -> bytes:
    """`resume_token` as an encoded field: its tag, its length as a varint, its bytes."""
    raw = token.encode()
    size, length = len(raw), bytearray()
    while size > 0x7F:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return _RESUME_TOKEN_TAG + bytes(length) + raw


def _session_response(
    event_type: pb.WatchEventType, row: SessionRow, token: str
) -> pb.WatchSessionsResponse:
    response = pb.WatchSessionsResponse(type=event_type, resume_token=token)
    convert.fill_session(response.session, row)
    return response
