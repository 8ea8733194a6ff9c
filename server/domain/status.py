"""The status rules, defined once: where a session keeps its status, the words it may hold,
and what a change of status does to its metadata.

A session's status lives in its JSON `metadata`, written by other services too:
- displayed status: `metadata.status` when the metadata is an object holding one, shown as
  its JSON text; otherwise DEFAULT_STATUS;
- `endTime`: stamped (ISO-8601, UTC, `Z`) when a session becomes closed or expired from any
  other status, kept when it moves between closed and expired, removed when it becomes active;
- a status can be merged into metadata that is an object or null; anything else is left alone.

The database applies these rules in SQL (server.data.status_sql builds every expression from
the names here), so a listed status is exactly what the status filter, its index and the
counters use, and an update is one atomic statement. Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

STATUS_KEY: Final = "status"
END_TIME_KEY: Final = "endTime"

ACTIVE: Final = "active"
CLOSED: Final = "closed"
EXPIRED: Final = "expired"
STORED_STATUSES: Final = (ACTIVE, CLOSED, EXPIRED)
TERMINAL_STATUSES: Final = (CLOSED, EXPIRED)
DEFAULT_STATUS: Final = ACTIVE  # what a session without a stored status shows
# The `endTime` text this service writes (server.data.status_sql writes the same in SQL).
END_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


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
    return moment.astimezone(UTC).strftime(END_TIME_FORMAT)
