"""Exact totals and deep pages from per-day counters, without scanning or OFFSETting a tenant.

The created-time range of a query is cut into whole UTC days, answered from the per-day counters
(`chat_session_counts`), and at most two partial-day edges, counted row by row through the
index. The statement built from the plan (`server.data.session_list`) walks those parts newest
first, so "skip N rows" becomes "start below this day's end, skip fewer than one day's rows".
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Range:
    """Half-open created-time range [start, end); None means unbounded on that side."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class CountPlan:
    """How to count a created-time range: whole days from counters, edges from rows."""

    days: Range | None  # day-aligned; None when the range holds no whole day
    newer_edge: Range | None  # the part after the last whole day
    older_edge: Range | None  # the part before the first whole day


def inclusive_range(created_from: datetime | None, created_to: datetime | None) -> Range:
    """The half-open range equal to the inclusive bounds (PostgreSQL keeps microseconds)."""
    end = None
    if created_to is not None and created_to < datetime.max.replace(tzinfo=UTC):
        end = created_to + _MICROSECOND
    return Range(created_from, end)


def _floor_day(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def _ceil_day(moment: datetime) -> datetime:
    floor = _floor_day(moment)
    if floor == moment:
        return floor
    try:
        return floor + _DAY
    except OverflowError:  # the last day of year 9999 never has a whole day after it
        return datetime.max.replace(tzinfo=UTC)


def plan(whole: Range) -> CountPlan:
    """Split `whole` into whole days and partial-day edges."""
    first_day = _ceil_day(whole.start) if whole.start is not None else None
    last_day = _floor_day(whole.end) if whole.end is not None else None
    if first_day is not None and last_day is not None and first_day >= last_day:
        return CountPlan(days=None, newer_edge=whole, older_edge=None)
    newer = (
        Range(last_day, whole.end)
        if last_day is not None and whole.end is not None and last_day < whole.end
        else None
    )
    older = (
        Range(whole.start, first_day)
        if first_day is not None and whole.start is not None and whole.start < first_day
        else None
    )
    return CountPlan(days=Range(first_day, last_day), newer_edge=newer, older_edge=older)
