"""The watch's rules (pure): which event a change is for a stream's filters, and which
transactions a ListSessions snapshot already reflected."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Event(enum.Enum):
    """What a change is for one stream."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"
    MESSAGE = "message"


# Change kinds as the change log stores them (server.data.counters).
KIND_ADDED = "A"
KIND_UPDATED = "U"
KIND_REMOVED = "R"
KIND_MESSAGE = "M"
KIND_RESET = "T"


@dataclass(frozen=True, slots=True)
class WatchFilters:
    """A stream's filters: stored status, channel, one session; None is no filter."""

    status: str | None
    channel_type: str | None
    session_id: str | None

    def matches(self, session_id: str, status: str | None, channel_type: str | None) -> bool:
        """Whether a session in this state belongs to the stream."""
        return (
            (self.session_id is None or session_id == self.session_id)
            and (self.status is None or status == self.status)
            and (self.channel_type is None or channel_type == self.channel_type)
        )

    @property
    def by_state(self) -> bool:
        """Whether membership depends on a session's state (status or channel), not only on
        its id."""
        return self.status is not None or self.channel_type is not None


@dataclass(frozen=True, slots=True)
class SessionChange:
    """A session change as logged: whether the session existed before and exists after, and
    the state on each side that filters look at."""

    session_id: str
    existed: bool
    old_status: str | None
    old_channel_type: str | None
    exists: bool
    status: str | None
    channel_type: str | None


def session_event(change: SessionChange, filters: WatchFilters) -> Event | None:
    """The event a session change is for a stream with `filters`, or None when the stream
    does not see it: a session that starts matching is ADDED, one that stops is REMOVED."""
    before = change.existed and filters.matches(
        change.session_id, change.old_status, change.old_channel_type
    )
    after = change.exists and filters.matches(change.session_id, change.status, change.channel_type)
    if before and after:
        return Event.UPDATED
    if after:
        return Event.ADDED
    if before:
        return Event.REMOVED
    return None


def message_event(
    session_id: str, session: tuple[str | None, str | None] | None, filters: WatchFilters
) -> Event | None:
    """A new message is for the stream when its session matched when the message was written
    (`session`: its status and channel then, None when it had none); filters by id alone need
    no state."""
    if not filters.by_state:
        return Event.MESSAGE if filters.matches(session_id, None, None) else None
    if session is None or not filters.matches(session_id, *session):
        return None
    return Event.MESSAGE


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A PostgreSQL snapshot (pg_current_snapshot()): which transactions it sees as committed."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """A snapshot from its text form, `xmin:xmax:xip,xip,...`."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(xid) for xid in xip.split(",") if xid))

    def sees(self, xid: int) -> bool:
        """Whether transaction `xid`, known to have committed, was visible in this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.in_progress)
