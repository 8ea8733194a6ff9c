"""One reader of the change log per server process, fanned out to all its watch streams.

The feed follows the log from where it stood at start: it reads when the folder's NOTIFY wakes
it (one dedicated LISTEN connection, never a pooled one) or, as a fallback, every
`poll_interval`. Each batch is handed, whole transactions at a time, to the subscriptions of
the tenants it concerns; a subscription is a bounded buffer, and one that would overflow is
marked and gets nothing more, so a slow client never grows memory or holds up the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg

from server.data import change_log
from server.data.change_log import LoggedChange
from server.data.counters import CHANGES_CHANNEL
from server.data.engine import asyncpg_dsn, server_settings
from server.data.statements import Database
from server.domain.watch import KIND_RESET

logger = logging.getLogger(__name__)

READ_BATCH = 1000
_RECONNECT_DELAY = 1.0


@dataclass(eq=False)
class Subscription:
    """What the feed hands one stream: its tenant's changes, in order, up to `capacity`."""

    tenant_id: str
    capacity: int
    changes: collections.deque[LoggedChange] = field(default_factory=collections.deque)
    # Every change of the tenant up to here has been put in `changes` (or skipped: overflowed).
    horizon: int = 0
    overflowed: bool = False
    expired: bool = False  # the feed fell behind the log's retention: changes were lost
    mid_transaction: bool = False  # the last changes offered are a part of a larger transaction
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, changes: list[LoggedChange]) -> None:
        """Take one or more whole transactions, unless that would pass the capacity with
        changes still waiting (a client that keeps up takes any batch)."""
        if self.overflowed:
            return
        if self.changes and len(self.changes) + len(changes) > self.capacity:
            self.overflowed = True
            self.changes.clear()
            return
        self.changes.extend(changes)


class ChangeFeed:
    """Follows the change log and fans each change out to the subscriptions of its tenant."""

    def __init__(
        self,
        database: Database,
        listen_url: str | None,
        *,
        poll_interval: float,
        read_batch: int = READ_BATCH,
    ) -> None:
        self.database = database  # its own pool: the feed never waits for a serving slot
        self._listen_dsn = asyncpg_dsn(listen_url) if listen_url else None
        self._poll_interval = poll_interval
        self._read_batch = read_batch
        self._subscriptions: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.position: int | None = None  # the last position read; None before the first read
        self._failing = False

    @property
    def streams(self) -> int:
        """How many subscriptions are open."""
        return sum(len(subscriptions) for subscriptions in self._subscriptions.values())

    async def start(self) -> None:
        """Start following the log from its last position (read now, or on the first round
        that reaches the database)."""
        with contextlib.suppress(Exception):
            self.position = (await change_log.log_state(self.database)).last_position
        self._tasks = [asyncio.create_task(self._follow(), name="watch-feed")]
        if self._listen_dsn is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="watch-feed-listener"))

    async def close(self) -> None:
        """Stop reading and tell every subscription to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.closing = True
                subscription.wake.set()

    def subscribe(self, tenant_id: str, capacity: int) -> Subscription | None:
        """A subscription receiving the tenant's changes after the feed's position now
        (`horizon`); None while the feed has not reached the log yet."""
        if self.position is None:
            return None
        subscription = Subscription(tenant_id, capacity, horizon=self.position)
        self._subscriptions[tenant_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding `subscription`."""
        subscriptions = self._subscriptions.get(subscription.tenant_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.tenant_id]

    def wake(self) -> None:
        """Read now (the folder logged something)."""
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            try:
                await self._read_all()
                self._failing = False
            except Exception as error:  # the next round retries; streams wait meanwhile
                if not self._failing:
                    logger.warning("reading the change log failed: %s", error.__class__.__name__)
                self._failing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _read_all(self) -> None:
        if self.position is None:
            self.position = (await change_log.log_state(self.database)).last_position
        while True:
            changes = await change_log.read_changes(
                self.database, after=self.position, limit=self._read_batch
            )
            full = len(changes) == self._read_batch
            continues = full and changes[0].xid == changes[-1].xid  # one huge transaction
            if full and not continues:
                # The last transaction may go on past the batch: hand it out whole next time.
                last_xid = changes[-1].xid
                while changes[-1].xid == last_xid:
                    changes.pop()
            if changes:
                self._dispatch(changes, continues=continues)
            if not full:
                return

    def _dispatch(self, changes: list[LoggedChange], *, continues: bool) -> None:
        assert self.position is not None  # set before the first read
        if changes[0].oldest_resumable > self.position:
            # Pruned before this reader got to them (it was stopped for a retention window).
            for subscriptions in self._subscriptions.values():
                for subscription in subscriptions:
                    subscription.expired = True
        by_tenant: dict[str, list[LoggedChange]] = collections.defaultdict(list)
        for change in changes:
            if change.kind == KIND_RESET:
                for tenant_id in self._subscriptions:
                    by_tenant[tenant_id].append(change)
            else:
                by_tenant[change.tenant_id].append(change)
        self.position = changes[-1].position
        # Only the streams given changes wake now (waking all of them for every read was most
        # of the cost with many quiet streams); the others see the new horizon when they next
        # wake, for a bookmark.
        for tenant_id, tenant_changes in by_tenant.items():
            for subscription in self._subscriptions.get(tenant_id, ()):
                subscription.offer(tenant_changes)
                subscription.mid_transaction = continues
                subscription.wake.set()
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.horizon = self.position
                if subscription.expired:
                    subscription.wake.set()

    async def _listen(self) -> None:
        assert self._listen_dsn is not None  # start() checked
        while True:
            try:
                connection = await asyncpg.connect(
                    self._listen_dsn, server_settings=server_settings(role="listener")
                )
            except Exception as error:  # polling goes on meanwhile
                logger.info("change-log listener cannot connect: %s", error.__class__.__name__)
                await asyncio.sleep(_RECONNECT_DELAY)
                continue
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _, closed=closed: closed.set())
            try:
                await connection.add_listener(CHANGES_CHANNEL, lambda *_: self.wake())
                self.wake()  # changes may have come while it was not listening
                await closed.wait()
            except Exception as error:
                logger.info("change-log listener lost: %s", error.__class__.__name__)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=_RECONNECT_DELAY)
            await asyncio.sleep(_RECONNECT_DELAY)
