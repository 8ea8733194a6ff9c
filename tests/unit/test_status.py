"""Status rules: the displayed status and the end time read from stored session metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from server import status


@pytest.mark.parametrize("metadata", [None, [], ["closed"], "closed", 1, True])
def test_metadata_that_is_not_an_object_displays_as_active(metadata: Any) -> None:
    assert status.stored_status(metadata) == status.ACTIVE


@pytest.mark.parametrize("metadata", [{}, {"status": None}, {"other": "closed"}])
def test_a_missing_or_null_status_displays_as_active(metadata: dict[str, Any]) -> None:
    assert status.stored_status(metadata) == status.ACTIVE


@pytest.mark.parametrize("word", ["closed", "expired", "active", "Closed", "archived", ""])
def test_a_text_status_is_shown_exactly_as_stored(word: str) -> None:
    assert status.stored_status({"status": word}) == word


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5, "5"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        ({"a": 1}, '{"a": 1}'),
        (["x", "é"], '["x", "é"]'),
    ],
)
def test_a_non_text_status_is_shown_as_its_json_text_like_postgresql_does(
    value: Any, text: str
) -> None:
    # Same text as PostgreSQL's `metadata ->> 'status'`, so Python and SQL agree on the status.
    assert status.stored_status({"status": value}) == text


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
    parsed = status.end_time({"endTime": stored})
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("stored", ["", "yesterday", "2024-13-01T00:00:00Z", "10:00", "2024/05/01"])
def test_an_unparseable_end_time_is_absent(stored: str) -> None:
    assert status.end_time({"endTime": stored}) is None


@pytest.mark.parametrize("stored", [None, 1_714_557_600, True, ["2024-05-01T10:00:00Z"], {}])
def test_a_non_text_end_time_is_absent(stored: Any) -> None:
    assert status.end_time({"endTime": stored}) is None


@pytest.mark.parametrize("metadata", [None, [], "2024-05-01T10:00:00Z", 3, {}, {"end_time": "x"}])
def test_end_time_is_absent_without_an_end_time_key_in_an_object(metadata: Any) -> None:
    assert status.end_time(metadata) is None


def test_the_written_end_time_reads_back_as_the_same_instant() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 42, tzinfo=UTC)
    written = status.format_end_time(moment)
    assert written == "2024-05-01T10:00:00.000042Z"
    assert status.end_time({"endTime": written}) == moment


@pytest.mark.parametrize(
    ("metadata", "accepted"),
    [(None, True), ({}, True), ({"status": "closed"}, True), ([], False), ("x", False), (1, False)],
)
def test_status_updates_merge_only_into_objects_or_null(metadata: Any, accepted: bool) -> None:
    assert status.accepts_status_update(metadata) is accepted
