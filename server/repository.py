"""Data access: every query the service issues. Each takes the connection first, the rest by
keyword, and filters on tenant_id. Nothing here commits or knows about gRPC; callers own the
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    Select,
    column,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from server.counting import CountPlan, Range
from server.cursor import Cursor
from server.db.models import (
    EFFECTIVE_STATUS_SQL,
    message_counts_table,
    messages_table,
    session_counts_table,
    sessions_table,
)
from server.validation import SessionFilters

_s = sessions_table.c
_m = messages_table.c
_c = session_counts_table.c
_n = message_counts_table.c
# A literal (not bound) expression, so PostgreSQL matches it to the status index.
_effective_status: ColumnElement[str] = literal_column(
    EFFECTIVE_STATUS_SQL.replace("metadata", "chat_sessions.metadata")
)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session as read from chat_sessions, with its message count."""

    tenant_id: str
    session_id: str
    channel_type: str | None
    metadata: Any
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message as read from chat_messages."""

    id: int
    role: str | None
    content: str | None
    metadata: Any
    created_at: datetime


_SESSION_COLUMNS = (
    "tenant_id",
    "session_id",
    "channel_type",
    "metadata",
    "created_at",
    "updated_at",
)


def _message_count(tenant_id: ColumnElement[str], session_id: ColumnElement[str]) -> Any:
    """The session's message count, read from the trigger-kept counter (0 when absent)."""
    return func.coalesce(
        select(_n.n)
        .where(_n.tenant_id == tenant_id, _n.session_id == session_id)
        .scalar_subquery(),
        0,
    ).label("message_count")


def _select_sessions() -> Select[Any]:
    return select(
        *(_s[name] for name in _SESSION_COLUMNS), _message_count(_s.tenant_id, _s.session_id)
    )


def _session_row(row: Row[*tuple[Any, ...]]) -> SessionRow:
    return SessionRow(**row._mapping)


def _filter_conditions(tenant_id: str, filters: SessionFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_s.tenant_id == tenant_id]
    if filters.status is not None:
        conditions.append(_effective_status == filters.status)
    if filters.created_from is not None:
        conditions.append(_s.created_at >= filters.created_from)
    if filters.created_to is not None:
        conditions.append(_s.created_at <= filters.created_to)
    if filters.channel_type is not None:
        conditions.append(_s.channel_type == filters.channel_type)
    return conditions


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Matching sessions per part of a count plan: whole days (from counters) and edges."""

    newer_edge: int
    days: list[tuple[date, int]]
    older_edge: int


_KIND_DAY, _KIND_NEWER_EDGE, _KIND_OLDER_EDGE = 0, 1, 2


def _in_range(column: ColumnElement[Any], part: Range) -> list[ColumnElement[bool]]:
    conditions = []
    if part.start is not None:
        conditions.append(column >= part.start)
    if part.end is not None:
        conditions.append(column < part.end)
    return conditions


async def count_session_segments(
    conn: AsyncConnection, *, tenant_id: str, filters: SessionFilters, count_plan: CountPlan
) -> SegmentCounts:
    """Exact matching-session counts for each part of `count_plan`, in one round trip."""
    parts: list[Select[Any, Any, Any]] = []
    if count_plan.days is not None:
        conditions = [_c.tenant_id == tenant_id]
        if filters.status is not None:
            conditions.append(_c.status == filters.status)
        if filters.channel_type is not None:
            conditions.append(_c.channel_type == filters.channel_type)
        if count_plan.days.start is not None:
            conditions.append(_c.day >= count_plan.days.start.date())
        if count_plan.days.end is not None:
            conditions.append(_c.day < count_plan.days.end.date())
        parts.append(
            select(literal(_KIND_DAY), _c.day, func.sum(_c.n)).where(*conditions).group_by(_c.day)
        )
    for kind, edge in (
        (_KIND_NEWER_EDGE, count_plan.newer_edge),
        (_KIND_OLDER_EDGE, count_plan.older_edge),
    ):
        if edge is not None:
            parts.append(
                select(literal(kind), null().cast(Date), func.count())
                .select_from(sessions_table)
                .where(*_filter_conditions(tenant_id, filters), *_in_range(_s.created_at, edge))
            )
    counts = SegmentCounts(newer_edge=0, days=[], older_edge=0)
    if not parts:
        return counts
    edges = {_KIND_NEWER_EDGE: 0, _KIND_OLDER_EDGE: 0}
    for kind, day, count in await conn.execute(union_all(*parts)):
        if kind == _KIND_DAY:
            counts.days.append((day, int(count)))
        else:
            edges[kind] = int(count)
    return SegmentCounts(edges[_KIND_NEWER_EDGE], counts.days, edges[_KIND_OLDER_EDGE])


async def list_sessions(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    filters: SessionFilters,
    after: Cursor | None,
    before: datetime | None,
    offset: int,
    limit: int,
) -> list[SessionRow]:
    """The tenant's matching sessions, newest first: after the keyset `after`, or created
    before `before`, skipping `offset` rows."""
    conditions = _filter_conditions(tenant_id, filters)
    if before is not None:
        conditions.append(_s.created_at < before)
    if after is not None:
        # A row comparison is an index range condition; the equivalent OR is not.
        conditions.append(
            tuple_(_s.created_at, _s.session_id) < tuple_(after.created_at, after.key)
        )
    page = (
        select(*(_s[name] for name in _SESSION_COLUMNS))
        .where(*conditions)
        .order_by(_s.created_at.desc(), _s.session_id.desc())
        .offset(offset)
        .limit(limit)
        .subquery("page")
    )
    # Counts are looked up for the page's rows only, not for the rows OFFSET skips.
    statement = select(
        *(page.c[name] for name in _SESSION_COLUMNS),
        _message_count(page.c.tenant_id, page.c.session_id),
    ).order_by(page.c.created_at.desc(), page.c.session_id.desc())
    result = await conn.execute(statement)
    return [_session_row(row) for row in result]


async def get_session(
    conn: AsyncConnection, *, tenant_id: str, session_id: str
) -> SessionRow | None:
    """The tenant's session `session_id`, or None."""
    statement = _select_sessions().where(_s.tenant_id == tenant_id, _s.session_id == session_id)
    row = (await conn.execute(statement)).first()
    return None if row is None else _session_row(row)


async def list_messages(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    session_id: str,
    after: Cursor | None,
    limit: int,
) -> list[MessageRow]:
    """The session's messages, oldest first (ties by id), after `after`."""
    conditions = [_m.tenant_id == tenant_id, _m.session_id == session_id]
    if after is not None:
        conditions.append(tuple_(_m.created_at, _m.id) > tuple_(after.created_at, int(after.key)))
    statement = (
        select(_m.id, _m.role, _m.content, _m.metadata, _m.created_at)
        .where(*conditions)
        .order_by(_m.created_at, _m.id)
        .limit(limit)
    )
    result = await conn.execute(statement)
    return [MessageRow(**row._mapping) for row in result]


# One statement, so concurrent writers cannot lose each other's keys: PostgreSQL re-reads the
# newest row version before applying the SET, and `||` / `-` touch only `status` and `endTime`.
# endTime is stamped when a session becomes closed/expired from any other status, kept when it
# moves between closed and expired, and removed when it becomes active again. Rows already in the
# requested status, and rows whose metadata is not an object, are not touched.
_STATUS_OF_S = EFFECTIVE_STATUS_SQL.replace("metadata", "s.metadata")
_UPDATE_STATUS = text(
    # Only module constants are interpolated; every value is a bind parameter.
    f"""
    UPDATE chat_sessions AS s SET
      metadata = CASE
        WHEN CAST(:status AS text) = 'active'
          THEN (COALESCE(NULLIF(s.metadata, 'null'::jsonb), '{{}}'::jsonb) - 'endTime')
               || jsonb_build_object('status', 'active')
        ELSE COALESCE(NULLIF(s.metadata, 'null'::jsonb), '{{}}'::jsonb) || jsonb_build_object(
          'status', CAST(:status AS text),
          'endTime', CASE
            WHEN COALESCE(s.metadata ->> 'status', 'active') IN ('closed', 'expired')
                 AND s.metadata ? 'endTime'
              THEN s.metadata -> 'endTime'
            ELSE to_jsonb(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
          END)
      END,
      updated_at = now()
    WHERE s.tenant_id = :tenant_id
      AND s.session_id = :session_id
      AND {_STATUS_OF_S} IS DISTINCT FROM CAST(:status AS text)
      AND (s.metadata IS NULL OR jsonb_typeof(s.metadata) IN ('object', 'null'))
    RETURNING s.tenant_id, s.session_id, s.channel_type, s.metadata, s.created_at, s.updated_at,
      COALESCE((SELECT n FROM chat_session_message_counts AS m
        WHERE m.tenant_id = s.tenant_id AND m.session_id = s.session_id), 0) AS message_count
    """  # noqa: S608
).columns(*(sessions_table.c[name] for name in _SESSION_COLUMNS), column("message_count", Integer))


async def set_session_status(
    conn: AsyncConnection, *, tenant_id: str, session_id: str, status: str
) -> SessionRow | None:
    """Set the session's stored status; None when no row changed (absent, same status, or
    metadata that is not an object)."""
    result = await conn.execute(
        _UPDATE_STATUS, {"tenant_id": tenant_id, "session_id": session_id, "status": status}
    )
    row = result.first()
    return None if row is None else _session_row(row)
