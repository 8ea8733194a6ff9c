"""Microseconds since the epoch: exact both ways over the whole Timestamp range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.time_keys import (
    INFINITY_KEY,
    MINUS_INFINITY_KEY,
    key_of,
    shown_micros,
    to_micros,
)

YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_micros(micros: int) -> datetime:
    """The inverse of to_micros, for checking it."""
    return _EPOCH + timedelta(microseconds=micros)


LAST_MOMENT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@given(st.datetimes(timezones=st.just(UTC)))
def test_a_moment_survives_the_round_trip(moment: datetime) -> None:
    assert from_micros(to_micros(moment)) == moment


@given(st.integers(min_value=to_micros(YEAR_ONE), max_value=to_micros(LAST_MOMENT)))
def test_microseconds_survive_the_round_trip(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


@pytest.mark.parametrize(
    ("moment", "micros"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 1),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -1),
        (datetime(2026, 12, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), 1_796_083_200_000_000),
        (YEAR_ONE, -62_135_596_800_000_000),
        (LAST_MOMENT, 253_402_300_799_999_999),
    ],
)
def test_known_moments_have_their_microsecond_counts(moment: datetime, micros: int) -> None:
    assert to_micros(moment) == micros
    assert from_micros(micros) == moment


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (0, 946_684_800_000_000),  # 2000-01-01, PostgreSQL's own epoch
        (key_of(LAST_MOMENT), to_micros(LAST_MOMENT)),
        (key_of(YEAR_ONE), to_micros(YEAR_ONE)),
        (key_of(LAST_MOMENT) + 1, to_micros(LAST_MOMENT)),  # year 10000 shows at the end
        (key_of(YEAR_ONE) - 1, to_micros(YEAR_ONE)),  # 1 BC shows at the start
        (INFINITY_KEY, to_micros(LAST_MOMENT)),
        (MINUS_INFINITY_KEY, to_micros(YEAR_ONE)),
    ],
)
def test_stored_times_show_exactly_inside_the_timestamp_range_and_clamped_outside(
    key: int, shown: int
) -> None:
    assert shown_micros(key) == shown
