"""The status rules of server.domain.status as SQL expressions over a metadata column, and the
UTC day a session counts under. Every query, index and counter uses these builders, so the
database applies one definition everywhere.

Keys and words are rendered as SQL literals, never bound: PostgreSQL matches the status
expression to its index only when the query's expression is the index's own.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    Text,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from server.domain.status import ACTIVE, DEFAULT_STATUS, END_TIME_KEY, STATUS_KEY, TERMINAL_STATUSES

# server.domain.status.END_TIME_FORMAT in to_char's words (tests/integration/test_status_rules
# proves they write the same text).
END_TIME_SQL_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def text_literal(value: str) -> ColumnElement[str]:
    """`value` as an SQL string literal (for module constants only, never input)."""
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _json(sql: str) -> ColumnElement[Any]:
    return literal_column(f"'{sql}'::jsonb", JSONB)


def displayed_status(metadata: ColumnElement[Any]) -> ColumnElement[str]:
    """The status a session shows: its stored status's text, or the default."""
    return func.coalesce(
        metadata.op("->>", return_type=Text)(text_literal(STATUS_KEY)),
        text_literal(DEFAULT_STATUS),
        type_=Text,
    )


def end_time_text(metadata: ColumnElement[Any]) -> ColumnElement[str | None]:
    """The stored `endTime` when it is a JSON string (anything else is no end time)."""
    return case(
        (
            func.jsonb_typeof(metadata.op("->", return_type=JSONB)(text_literal(END_TIME_KEY)))
            == text_literal("string"),
            metadata.op("->>", return_type=Text)(text_literal(END_TIME_KEY)),
        ),
    )


def accepts_status(metadata: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether a status can be merged without overwriting the metadata: an object, or null
    (SQL or JSON), which counts as {}."""
    return or_(
        metadata.is_(None),
        func.jsonb_typeof(metadata).in_([text_literal("object"), text_literal("null")]),
    ).self_group()


def with_status(metadata: ColumnElement[Any], status: ColumnElement[str]) -> ColumnElement[Any]:
    """The metadata after setting `status`: only the status and `endTime` keys change."""
    base = func.coalesce(func.nullif(metadata, _json("null")), _json("{}"), type_=JSONB)
    status_key, end_time_key = text_literal(STATUS_KEY), text_literal(END_TIME_KEY)
    stamp = case(
        (
            and_(
                displayed_status(metadata).in_([text_literal(s) for s in TERMINAL_STATUSES]),
                metadata.op("?", return_type=Boolean)(end_time_key),
            ),
            metadata.op("->", return_type=JSONB)(end_time_key),
        ),
        else_=func.to_jsonb(
            func.to_char(
                func.timezone(text_literal("UTC"), func.now()), text_literal(END_TIME_SQL_FORMAT)
            )
        ),
    )
    return case(
        (
            status == text_literal(ACTIVE),
            base.op("-", return_type=JSONB)(end_time_key).op("||", return_type=JSONB)(
                func.jsonb_build_object(status_key, text_literal(ACTIVE))
            ),
        ),
        else_=base.op("||", return_type=JSONB)(
            func.jsonb_build_object(status_key, status, end_time_key, stamp)
        ),
    )


def counter_day(created_at: ColumnElement[datetime]) -> ColumnElement[date]:
    """The UTC day a session counts under in the per-day counters (server.domain.counting
    plans whole days of the same calendar)."""
    return cast(func.timezone(text_literal("UTC"), created_at), Date)


def render(expression: ColumnElement[Any]) -> str:
    """`expression` as SQL text, for statements written as text (counter upkeep, tests)."""
    return str(expression.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
