"""Times as whole microseconds since the Unix epoch: PostgreSQL's precision, exact both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware `moment`."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC datetime `micros` microseconds after the epoch (OverflowError past year 9999)."""
    return _EPOCH + timedelta(microseconds=micros)
