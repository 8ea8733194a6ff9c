"""Status rules: the stored status vocabulary, and reading and writing `endTime` text.

The rules themselves run in SQL: the write side (stamp `endTime` once, clear it on
reactivation) inside the single UPDATE statement in `repository`, so it is atomic, and the read
side (the displayed status, the `endTime` string, whether a status can be merged) as the
expressions in `server.data.schema`, so a listed status is exactly what the status filter, its
index and the counters use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

ACTIVE: Final = "active"
CLOSED: Final = "closed"
EXPIRED: Final = "expired"
STORED_STATUSES: Final = (ACTIVE, CLOSED, EXPIRED)
TERMINAL_STATUSES: Final = (CLOSED, EXPIRED)


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def parse_end_time(text: str) -> datetime | None:
    """A stored `endTime` as an aware UTC datetime, or None when it is not an ISO-8601 time.

    Naive times are taken as UTC: the previous API wrote them that way. A time whose offset puts
    it outside years 1 to 9999 in UTC (`0001-01-01T00:00:00+01:00`) is clamped to that range,
    the range a Timestamp can carry, like every other stored time.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return _FIRST if parsed.year == 1 else _LAST


def format_end_time(moment: datetime) -> str:
    """The `endTime` text this service writes: ISO-8601 in UTC with a `Z` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
