"""Counting plans cover a range exactly, whatever the rows and bounds (the seek through them runs
in SQL: tests/integration/test_list_sessions.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.domain import counting

T0 = datetime(2026, 3, 1, tzinfo=UTC)
moments = st.integers(min_value=0, max_value=5 * 24 * 3600 * 10**6).map(
    lambda micros: T0 + timedelta(microseconds=micros)
)


def _matches(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or moment >= start) and (end is None or moment < end)


def _count(rows: list[datetime], part: counting.Range | None) -> int:
    return 0 if part is None else sum(_matches(row, part.start, part.end) for row in rows)


@given(
    rows=st.lists(moments, max_size=60),
    start=st.none() | moments,
    end=st.none() | moments,
)
def test_the_plan_counts_exactly_the_rows_in_the_range(
    rows: list[datetime], start: datetime | None, end: datetime | None
) -> None:
    whole = counting.inclusive_range(start, end)
    count_plan = counting.plan(whole)
    parts = (count_plan.newer_edge, count_plan.days, count_plan.older_edge)
    expected = sum(_matches(row, whole.start, whole.end) for row in rows)
    # The parts cover the range without overlapping: their counts add up to the range's.
    assert sum(_count(rows, part) for part in parts) == expected
    if count_plan.days is not None:
        for bound in (count_plan.days.start, count_plan.days.end):
            assert bound is None or bound == bound.replace(
                hour=0, minute=0, second=0, microsecond=0
            )


def test_a_range_inside_one_day_is_counted_row_by_row() -> None:
    whole = counting.inclusive_range(T0 + timedelta(hours=1), T0 + timedelta(hours=5))
    count_plan = counting.plan(whole)
    assert count_plan.days is None
    assert count_plan.newer_edge == whole


def test_whole_days_come_from_counters_and_partial_days_from_edges() -> None:
    whole = counting.inclusive_range(T0 + timedelta(hours=6), T0 + timedelta(days=3, hours=2))
    count_plan = counting.plan(whole)
    assert count_plan.days == counting.Range(T0 + timedelta(days=1), T0 + timedelta(days=3))
    assert count_plan.older_edge == counting.Range(T0 + timedelta(hours=6), T0 + timedelta(days=1))
    assert count_plan.newer_edge is not None
    assert count_plan.newer_edge.start == T0 + timedelta(days=3)


def test_an_unbounded_range_is_all_counters() -> None:
    count_plan = counting.plan(counting.inclusive_range(None, None))
    assert count_plan == counting.CountPlan(counting.Range(None, None), None, None)


def test_an_end_bound_at_the_last_representable_moment_is_unbounded() -> None:
    last = datetime.max.replace(tzinfo=UTC)
    assert counting.inclusive_range(None, last).end is None
