"""SQL expressions the query families share: times as sort keys, clamped counts, a session's
message count, and a session's displayed fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Label,
    and_,
    bindparam,
    case,
    cast,
    extract,
    func,
    literal_column,
    select,
)

from server.data.schema import message_count_deltas_table, message_counts_table
from server.data.status_sql import displayed_status, end_time_text, text_literal
from server.domain.time_keys import INFINITY_KEY, KEY_EPOCH_OFFSET, MINUS_INFINITY_KEY

_n = message_counts_table.c
_dn = message_count_deltas_table.c

_INT64_MAX = 2**63 - 1
_MICROS_PER_SECOND = 1_000_000
_DAY_US = 86_400_000_000


def number(value: int) -> ColumnElement[int]:
    """An integer constant as an SQL literal: part of the statement, not a parameter."""
    return literal_column(str(value), BigInteger)


def _moment(sql: str) -> ColumnElement[datetime]:
    return literal_column(f"TIMESTAMPTZ '{sql}'")


def sort_key(moment: ColumnElement[datetime]) -> ColumnElement[int]:
    """A stored time's exact sort key (server.domain.time_keys), infinities included.

    Rows carry keys rather than timestamptz: a BIGINT decodes faster than a datetime, and a key
    keeps what a datetime cannot ('infinity', year 20000), so page tokens carry the stored sort
    key itself. EXTRACT gives an exact NUMERIC (PostgreSQL 14+) but falls back to float near
    the end of the range, where an interval since 2000 stays exact.
    """
    return cast(
        case(
            (
                and_(moment < _moment("290000-01-01Z"), moment > _moment("-infinity")),
                extract("epoch", moment) * number(_MICROS_PER_SECOND) - number(KEY_EPOCH_OFFSET),
            ),
            (
                func.isfinite(moment),
                extract("epoch", moment - _moment("2000-01-01Z")) * number(_MICROS_PER_SECOND),
            ),
            (moment > _moment("epoch"), number(INFINITY_KEY)),
            else_=number(MINUS_INFINITY_KEY),
        ),
        BigInteger,
    )


def time_of_key(name: str) -> ColumnElement[datetime]:
    """The stored time the bound key `name` stands for, exactly: calendar arithmetic on a
    timestamp without time zone (no daylight saving), whole days then microseconds (no float
    rounding). It depends on the bound key alone, so it is evaluated once per statement and
    still bounds an index range."""
    key = bindparam(name, type_=BigInteger)
    days = key.op("/")(number(_DAY_US)).op("*")(literal_column("INTERVAL '1 day'"))
    micros = key.op("%")(number(_DAY_US)).op("*")(literal_column("INTERVAL '1 microsecond'"))
    finite = func.timezone(
        text_literal("UTC"), literal_column("TIMESTAMP '2000-01-01'") + days + micros
    )
    return case(
        (key == number(INFINITY_KEY), _moment("infinity")),
        (key == number(MINUS_INFINITY_KEY), _moment("-infinity")),
        else_=finite,
    )


def clamped_count(value: ColumnElement[Any]) -> ColumnElement[int]:
    """A sum of counters as a BIGINT (not the NUMERIC a SUM of BIGINT gives, which the driver
    would decode as a Decimal), within 0 and 2^63-1: counters that drifted (negative, or absurd
    after a bypassed trigger) must never fail a call."""
    return cast(func.least(func.greatest(value, number(0)), number(_INT64_MAX)), BigInteger)


def folded_message_count(
    tenant_id: ColumnElement[str], session_id: ColumnElement[str]
) -> ColumnElement[int]:
    """A session's message counter as folded so far (0 when it has none)."""
    return func.coalesce(
        select(_n.n)
        .where(_n.tenant_id == tenant_id, _n.session_id == session_id)
        .scalar_subquery(),
        number(0),
    )


def message_count(tenant_id: ColumnElement[str], session_id: ColumnElement[str]) -> Label[int]:
    """One session's message count: its folded counter plus its unfolded deltas."""
    pending = (
        select(func.sum(_dn.n)).where(_dn.tenant_id == tenant_id, _dn.session_id == session_id)
    ).scalar_subquery()
    return clamped_count(
        folded_message_count(tenant_id, session_id) + func.coalesce(pending, number(0))
    ).label("message_count")


def session_fields(source: FromClause) -> tuple[ColumnElement[Any], ...]:
    """A SessionRow's fields but the message count, read from `source`: chat_sessions or a
    subquery of its columns. The status and end time are computed in SQL, so a list page
    decodes no JSON and shows exactly the status the filter and counters use; a page computes
    them only for the rows it returns."""
    columns = source.c
    return (
        columns.tenant_id,
        columns.session_id,
        columns.channel_type,
        displayed_status(columns.metadata).label("status"),
        end_time_text(columns.metadata).label("end_time"),
        sort_key(columns.created_at).label("created_key"),
        sort_key(columns.updated_at).label("updated_key"),
    )
