"""Counting plans and deep-page seeks agree with a brute-force count over any rows and bounds."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server import counting

T0 = datetime(2026, 3, 1, tzinfo=UTC)
moments = st.integers(min_value=0, max_value=5 * 24 * 3600 * 10**6).map(
    lambda micros: T0 + timedelta(microseconds=micros)
)


def _matches(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or moment >= start) and (end is None or moment < end)


def _segments_for(rows: list[datetime], whole: counting.Range) -> list[counting.Segment]:
    count_plan = counting.plan(whole)
    per_day: Counter[object] = Counter()
    if count_plan.days is not None:
        days = count_plan.days
        per_day.update(row.date() for row in rows if _matches(row, days.start, days.end))

    def edge_count(edge: counting.Range | None) -> int:
        if edge is None:
            return 0
        return sum(_matches(row, edge.start, edge.end) for row in rows)

    return counting.segments(
        count_plan,
        newer_edge_count=edge_count(count_plan.newer_edge),
        day_counts=list(per_day.items()),  # type: ignore[arg-type]
        older_edge_count=edge_count(count_plan.older_edge),
    )


@given(
    rows=st.lists(moments, max_size=60),
    start=st.none() | moments,
    end=st.none() | moments,
)
def test_segments_count_exactly_the_rows_in_the_range(
    rows: list[datetime], start: datetime | None, end: datetime | None
) -> None:
    whole = counting.inclusive_range(start, end)
    expected = sum(_matches(row, whole.start, whole.end) for row in rows)
    assert sum(s.count for s in _segments_for(rows, whole)) == expected


@given(
    rows=st.lists(moments, min_size=1, max_size=40, unique=True),
    start=st.none() | moments,
    end=st.none() | moments,
)
def test_seek_lands_on_the_row_at_every_offset(
    rows: list[datetime], start: datetime | None, end: datetime | None
) -> None:
    whole = counting.inclusive_range(start, end)
    in_range = sorted((r for r in rows if _matches(r, whole.start, whole.end)), reverse=True)
    ordered = _segments_for(rows, whole)
    for offset, expected in enumerate(in_range):
        found = counting.seek(ordered, offset)
        assert found is not None
        below = [r for r in in_range if found.before is None or r < found.before]
        assert below[found.skip] == expected
    assert counting.seek(ordered, len(in_range)) is None


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
