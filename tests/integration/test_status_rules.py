"""The read side of the status rules, evaluated by PostgreSQL itself: the expressions every
query uses for a session's displayed status, its `endTime` text and whether a status update can
merge into its metadata (server.data.schema)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.schema import ACCEPTS_STATUS_SQL, EFFECTIVE_STATUS_SQL, END_TIME_TEXT_SQL

SQL_NULL = object()


async def evaluate(engine: AsyncEngine, rule_sql: str, metadata: Any) -> Any:
    """`rule_sql` over one row whose metadata is `metadata` as JSONB (SQL_NULL for SQL NULL)."""
    stored = None if metadata is SQL_NULL else json.dumps(metadata)
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT {rule_sql} FROM (SELECT CAST(:m AS jsonb) AS metadata) AS row"),  # noqa: S608
            {"m": stored},
        )
        return result.scalar_one()


@pytest.mark.parametrize(
    "metadata",
    [SQL_NULL, None, [], ["closed"], "closed", 1, True, {}, {"status": None}, {"other": "closed"}],
)
async def test_without_a_status_in_an_object_a_session_is_active(
    engine: AsyncEngine, metadata: Any
) -> None:
    assert await evaluate(engine, EFFECTIVE_STATUS_SQL, metadata) == "active"


@pytest.mark.parametrize("word", ["closed", "expired", "active", "Closed", "archived", ""])
async def test_a_text_status_is_shown_exactly_as_stored(engine: AsyncEngine, word: str) -> None:
    assert await evaluate(engine, EFFECTIVE_STATUS_SQL, {"status": word}) == word


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5, "5"), (True, "true"), (1.5, "1.5"), (1e2, "100.0"), ({"a": 1}, '{"a": 1}')],
)
async def test_a_non_text_status_is_shown_as_its_json_text(
    engine: AsyncEngine, value: Any, shown: str
) -> None:
    assert await evaluate(engine, EFFECTIVE_STATUS_SQL, {"status": value}) == shown


async def test_a_text_end_time_is_read_as_stored(engine: AsyncEngine) -> None:
    stored = {"status": "closed", "endTime": "2024-05-01T10:00:00Z"}
    assert await evaluate(engine, END_TIME_TEXT_SQL, stored) == "2024-05-01T10:00:00Z"


@pytest.mark.parametrize(
    "metadata",
    [
        {"endTime": 1_714_557_600},
        {"endTime": True},
        {"endTime": ["2024-05-01T10:00:00Z"]},
        {"endTime": None},
        {"end_time": "2024-05-01T10:00:00Z"},
        {},
        ["2024-05-01T10:00:00Z"],
        "2024-05-01T10:00:00Z",
        SQL_NULL,
    ],
)
async def test_an_end_time_that_is_not_a_json_string_in_an_object_is_absent(
    engine: AsyncEngine, metadata: Any
) -> None:
    assert await evaluate(engine, END_TIME_TEXT_SQL, metadata) is None


@pytest.mark.parametrize(
    ("metadata", "accepted"),
    [
        (SQL_NULL, True),
        (None, True),
        ({}, True),
        ({"status": "closed"}, True),
        ([], False),
        ("x", False),
        (1, False),
    ],
)
async def test_status_updates_merge_only_into_objects_or_null(
    engine: AsyncEngine, metadata: Any, accepted: bool
) -> None:
    assert await evaluate(engine, ACCEPTS_STATUS_SQL, metadata) is accepted
