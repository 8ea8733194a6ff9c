"""Reading and writing `endTime` text (the status rules themselves run in SQL:
tests/integration/test_status_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.domain import status


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123456Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T05:30:00-04:30", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01 10:00:00.5", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_end_time_is_read_as_utc_whatever_offset_it_was_written_with(
    stored: str, expected: datetime
) -> None:
    parsed = status.parse_end_time(stored)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("stored", ["", "yesterday", "2024-13-01T00:00:00Z", "10:00", "2024/05/01"])
def test_an_unparseable_end_time_is_absent(stored: str) -> None:
    assert status.parse_end_time(stored) is None


def test_the_written_end_time_reads_back_as_the_same_instant() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 42, tzinfo=UTC)
    written = status.format_end_time(moment)
    assert written == "2024-05-01T10:00:00.000042Z"
    assert status.parse_end_time(written) == moment


@pytest.mark.parametrize(
    ("stored", "clamped"),
    [
        ("0001-01-01T00:00:00+01:00", datetime.min.replace(tzinfo=UTC)),
        ("0001-01-01T00:30:00+14:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59-01:00", datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T20:00:00-12:00", datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_an_end_time_beyond_the_timestamp_range_in_utc_is_clamped(
    stored: str, clamped: datetime
) -> None:
    assert status.parse_end_time(stored) == clamped
