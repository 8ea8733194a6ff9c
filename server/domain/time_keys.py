"""Times as whole microseconds: since the Unix epoch for what is shown, and as PostgreSQL's own
sort key (since 2000-01-01, infinities included) for what is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware `moment`."""
    return (moment - _EPOCH) // _MICROSECOND


# A stored time's sort key as PostgreSQL itself holds a timestamptz: microseconds since
# 2000-01-01 UTC, with 'infinity' and '-infinity' as the int64 extremes. Exact for every value
# the column can hold (4713 BC to 294276 AD), which a Timestamp or a datetime cannot carry.
KEY_EPOCH_OFFSET = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
INFINITY_KEY = 2**63 - 1
MINUS_INFINITY_KEY = -(2**63)
# The finite keys a timestamptz can hold: 4714-11-24 BC to the last moment of 294276 AD.
FIRST_STORABLE_KEY = -211_813_488_000_000_000
LAST_STORABLE_KEY = 9_223_371_331_199_999_999
_FIRST_TIMESTAMP = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_LAST_TIMESTAMP = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def shown_micros(key: int) -> int:
    """Microseconds since 1970 to show for a stored time's `key`: exact within the Timestamp
    range (years 1 to 9999), clamped to its ends outside it."""
    return min(max(key + KEY_EPOCH_OFFSET, _FIRST_TIMESTAMP), _LAST_TIMESTAMP)


def key_of(moment: datetime) -> int:
    """The sort key of a timezone-aware `moment`."""
    return to_micros(moment) - KEY_EPOCH_OFFSET


def is_storable(key: int) -> bool:
    """Whether `key` is one a timestamptz can hold (so one a page token may carry)."""
    return FIRST_STORABLE_KEY <= key <= LAST_STORABLE_KEY or key in (
        INFINITY_KEY,
        MINUS_INFINITY_KEY,
    )
