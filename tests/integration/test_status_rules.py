"""The status rules as PostgreSQL evaluates them: the expressions every query uses for a
session's displayed status, its `endTime` text, whether a status update can merge into its
metadata (server.data.status_sql), and the `endTime` text an update writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import ColumnClause, column, text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.status_sql import (
    END_TIME_SQL_FORMAT,
    accepts_status,
    displayed_status,
    end_time_text,
    render,
)
from server.domain.status import format_end_time, parse_end_time

SQL_NULL = object()
_METADATA: ColumnClause[Any] = column("metadata")
EFFECTIVE_STATUS_SQL = render(displayed_status(_METADATA))
END_TIME_TEXT_SQL = render(end_time_text(_METADATA))
ACCEPTS_STATUS_SQL = render(accepts_status(_METADATA))


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


async def test_an_update_writes_end_time_text_as_the_domain_formats_and_parses_it(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT now() AS at, "
                    f"to_char(now() AT TIME ZONE 'UTC', '{END_TIME_SQL_FORMAT}') AS written"
                )
            )
        ).one()
    assert row.written == format_end_time(row.at)
    assert parse_end_time(row.written) == row.at
