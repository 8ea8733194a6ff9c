"""Exact totals and deep pages from per-day counters, without scanning or OFFSETting a tenant.

The created-time range of a query is cut into whole UTC days, answered from the per-day counters
(`chat_session_counts`), and at most two partial-day edges, counted row by row through the
index. Walking those segments newest first turns "skip N rows" into "start below this time, skip
fewer than one segment's rows". Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

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


@dataclass(frozen=True, slots=True)
class Segment:
    """A counted, time-ordered slice of the result: rows older than `end` (None = no bound)."""

    end: datetime | None
    count: int


@dataclass(frozen=True, slots=True)
class Seek:
    """Where a page starts: the rows older than `before`, skipping `skip` of them."""

    before: datetime | None
    skip: int


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


def segments(
    count_plan: CountPlan,
    *,
    newer_edge_count: int,
    day_counts: Sequence[tuple[date, int]],
    older_edge_count: int,
) -> list[Segment]:
    """The plan's counted slices, newest first. `day_counts` may come in any order."""
    result: list[Segment] = []
    if count_plan.newer_edge is not None:
        result.append(Segment(count_plan.newer_edge.end, newer_edge_count))
    for day, count in sorted(day_counts, reverse=True):
        result.append(Segment(datetime.combine(day, time(), tzinfo=UTC) + _DAY, count))
    if count_plan.older_edge is not None:
        result.append(Segment(count_plan.older_edge.end, older_edge_count))
    return result


def seek(ordered: Sequence[Segment], offset: int) -> Seek | None:
    """Where the row at `offset` (newest first) starts, or None when it is past the end.

    The first segment's bound is kept as is, so a newest segment with no upper bound stays
    unbounded.
    """
    remaining = offset
    for segment in ordered:
        if remaining < segment.count:
            return Seek(segment.end, remaining)
        remaining -= segment.count
    return None
