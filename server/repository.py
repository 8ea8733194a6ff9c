"""Data access: every query the service issues. Each takes where it runs first (the Database,
for a statement on its own, or a caller's Transaction), the rest by keyword, and filters on
tenant_id. Nothing here opens a transaction or knows about gRPC.

Statements are SQLAlchemy Core, built and compiled once per shape (which optional filters are
present) with bound parameters; a call only binds values (see server.db.statements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Date,
    Integer,
    Select,
    Text,
    bindparam,
    func,
    literal_column,
    null,
    select,
    text,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import Label

from server.counting import CountPlan, Range
from server.cursor import Cursor
from server.db.models import (
    EFFECTIVE_STATUS_SQL,
    message_counts_table,
    messages_table,
    session_counts_table,
    sessions_table,
)
from server.db.statements import Compiled, Database, Transaction, compile_statement
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

_TENANT = bindparam("tenant_id", type_=_s.tenant_id.type)
_SESSION = bindparam("session_id", type_=_s.session_id.type)
_TIME = _s.created_at.type


def _time(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=_TIME)


@dataclass(frozen=True, slots=True)
class _Shape:
    """Which optional session filters a query has."""

    status: bool
    created_from: bool
    created_to: bool
    channel_type: bool

    @classmethod
    def of(cls, filters: SessionFilters) -> _Shape:
        return cls(
            filters.status is not None,
            filters.created_from is not None,
            filters.created_to is not None,
            filters.channel_type is not None,
        )


def _filter_params(tenant_id: str, filters: SessionFilters) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "status": filters.status,
        "created_from": filters.created_from,
        "created_to": filters.created_to,
        "channel_type": filters.channel_type,
    }


def _message_count(tenant_id: ColumnElement[str], session_id: ColumnElement[str]) -> Any:
    """The session's message count, read from the trigger-kept counter (0 when absent)."""
    return func.coalesce(
        select(_n.n)
        .where(_n.tenant_id == tenant_id, _n.session_id == session_id)
        .scalar_subquery(),
        0,
    ).label("message_count")


def _session_row(row: Sequence[Any]) -> SessionRow:
    return SessionRow(*row)


def _filter_conditions(shape: _Shape) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_s.tenant_id == _TENANT]
    if shape.status:
        conditions.append(_effective_status == bindparam("status", type_=Text))
    if shape.created_from:
        conditions.append(_s.created_at >= _time("created_from"))
    if shape.created_to:
        conditions.append(_s.created_at <= _time("created_to"))
    if shape.channel_type:
        conditions.append(_s.channel_type == bindparam("channel_type", type_=_s.channel_type.type))
    return conditions


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Matching sessions per part of a count plan: whole days (from counters) and edges."""

    newer_edge: int
    days: list[tuple[date, int]]  # per day, only when asked for `by_day`
    days_total: int
    older_edge: int

    @property
    def total(self) -> int:
        """All matching sessions."""
        return self.newer_edge + self.days_total + self.older_edge


_KIND_DAY, _KIND_NEWER_EDGE, _KIND_OLDER_EDGE = 0, 1, 2
_EDGES = ((_KIND_NEWER_EDGE, "newer"), (_KIND_OLDER_EDGE, "older"))


def _bounds(part: Range | None) -> tuple[bool, bool] | None:
    return None if part is None else (part.start is not None, part.end is not None)


_Bounds = tuple[bool, bool] | None


@lru_cache(maxsize=256)
def _count_parts(
    shape: _Shape, days: _Bounds, edges: tuple[_Bounds, _Bounds], by_day: bool
) -> Select[Any] | CompoundSelect[Any]:
    """Rows (kind, day, n): whole days from the counters, edges counted from the rows."""
    parts: list[Select[Any, Any, Any]] = []
    if days is not None:
        conditions = [_c.tenant_id == _TENANT]
        if shape.status:
            conditions.append(_c.status == bindparam("status", type_=Text))
        if shape.channel_type:
            conditions.append(
                _c.channel_type == bindparam("channel_type", type_=_c.channel_type.type)
            )
        if days[0]:
            conditions.append(_c.day >= bindparam("days_start", type_=Date))
        if days[1]:
            conditions.append(_c.day < bindparam("days_end", type_=Date))
        day_kind: Label[Any] = literal_column(str(_KIND_DAY)).label("kind")
        if by_day:
            parts.append(
                select(day_kind, _c.day.label("day"), func.sum(_c.n).label("n"))
                .where(*conditions)
                .group_by(_c.day)
            )
        else:  # one row: a total needs no per-day breakdown
            parts.append(
                select(day_kind, null().cast(Date).label("day"), func.sum(_c.n).label("n")).where(
                    *conditions
                )
            )
    for (kind, name), bounds in zip(_EDGES, edges, strict=True):
        if bounds is None:
            continue
        conditions = _filter_conditions(shape)
        if bounds[0]:
            conditions.append(_s.created_at >= _time(f"{name}_start"))
        if bounds[1]:
            conditions.append(_s.created_at < _time(f"{name}_end"))
        parts.append(
            select(
                literal_column(str(kind)).label("kind"),
                null().cast(Date).label("day"),
                func.count().label("n"),
            )
            .select_from(sessions_table)
            .where(*conditions)
        )
    return parts[0] if len(parts) == 1 else union_all(*parts)


@lru_cache(maxsize=256)
def _count_statement(
    shape: _Shape, days: _Bounds, edges: tuple[_Bounds, _Bounds], by_day: bool
) -> Compiled:
    return compile_statement(_count_parts(shape, days, edges, by_day))


def _count_shape(count_plan: CountPlan) -> tuple[_Bounds, tuple[_Bounds, _Bounds]]:
    return _bounds(count_plan.days), (
        _bounds(count_plan.newer_edge),
        _bounds(count_plan.older_edge),
    )


def _count_params(tenant_id: str, filters: SessionFilters, count_plan: CountPlan) -> dict[str, Any]:
    params = _filter_params(tenant_id, filters)
    if count_plan.days is not None:
        params["days_start"] = count_plan.days.start and count_plan.days.start.date()
        params["days_end"] = count_plan.days.end and count_plan.days.end.date()
    for (_, name), edge in zip(_EDGES, (count_plan.newer_edge, count_plan.older_edge), strict=True):
        if edge is not None:
            params[f"{name}_start"], params[f"{name}_end"] = edge.start, edge.end
    return params


async def count_session_segments(
    tx: Transaction,
    *,
    tenant_id: str,
    filters: SessionFilters,
    count_plan: CountPlan,
    by_day: bool,
) -> SegmentCounts:
    """Exact matching-session counts for each part of `count_plan` (whole days one by one when
    `by_day`), in one round trip."""
    statement = _count_statement(_Shape.of(filters), *_count_shape(count_plan), by_day)
    params = _count_params(tenant_id, filters, count_plan)
    days: list[tuple[date, int]] = []
    counted = {_KIND_DAY: 0, _KIND_NEWER_EDGE: 0, _KIND_OLDER_EDGE: 0}
    for kind, day, count in await tx.fetch(statement, params):
        counted[kind] += int(count or 0)  # SUM over no counter rows is NULL
        if day is not None:
            days.append((day, int(count)))
    return SegmentCounts(
        counted[_KIND_NEWER_EDGE], days, counted[_KIND_DAY], counted[_KIND_OLDER_EDGE]
    )


@lru_cache(maxsize=128)
def _page_select(shape: _Shape, before: bool, after: bool) -> Select[Any]:
    """A page of sessions with their message counts, newest first."""
    conditions = _filter_conditions(shape)
    if before:
        conditions.append(_s.created_at < _time("before"))
    if after:
        # A row comparison is an index range condition; the equivalent OR is not.
        conditions.append(
            tuple_(_s.created_at, _s.session_id)
            < tuple_(_time("after_created_at"), bindparam("after_key", type_=_s.session_id.type))
        )
    page = (
        select(*(_s[name] for name in _SESSION_COLUMNS))
        .where(*conditions)
        .order_by(_s.created_at.desc(), _s.session_id.desc())
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )
    # Counts are looked up for the page's rows only, not for the rows OFFSET skips.
    return select(
        *(page.c[name] for name in _SESSION_COLUMNS),
        _message_count(page.c.tenant_id, page.c.session_id),
    ).order_by(page.c.created_at.desc(), page.c.session_id.desc())


@lru_cache(maxsize=128)
def _list_statement(shape: _Shape, before: bool) -> Compiled:
    return compile_statement(_page_select(shape, before, False))


@lru_cache(maxsize=256)
def _first_page_statement(
    shape: _Shape, days: _Bounds, edges: tuple[_Bounds, _Bounds], after: bool
) -> Compiled:
    counts = _count_parts(shape, days, edges, False).subquery("counts")
    totals = select(func.coalesce(func.sum(counts.c.n), 0).label("total")).subquery("totals")
    page = _page_select(shape, False, after).subquery("page")
    # The LEFT JOIN keeps the total when the page is empty.
    return compile_statement(
        select(totals.c.total, *page.c)
        .select_from(totals.outerjoin(page, true()))
        .order_by(page.c.created_at.desc(), page.c.session_id.desc())
    )


async def first_page(
    database: Database,
    *,
    tenant_id: str,
    filters: SessionFilters,
    count_plan: CountPlan,
    after: Cursor | None,
    limit: int,
) -> tuple[int, list[SessionRow]]:
    """The exact total and a page that needs no seek (page 1, or after a keyset cursor), in one
    statement: one round trip, one snapshot, no transaction."""
    statement = _first_page_statement(
        _Shape.of(filters), *_count_shape(count_plan), after is not None
    )
    params = _count_params(tenant_id, filters, count_plan)
    params.update(before=None, offset=0, limit=limit)
    if after is not None:
        params.update(after_created_at=after.created_at, after_key=after.key)
    rows = await database.fetch(statement, params)
    total = int(rows[0][0]) if rows else 0
    return total, [_session_row(row[1:]) for row in rows if row[2] is not None]


async def list_sessions(
    tx: Transaction,
    *,
    tenant_id: str,
    filters: SessionFilters,
    before: datetime | None,
    offset: int,
    limit: int,
) -> list[SessionRow]:
    """The tenant's matching sessions created before `before`, newest first, skipping
    `offset` rows."""
    statement = _list_statement(_Shape.of(filters), before is not None)
    params = _filter_params(tenant_id, filters)
    params.update(before=before, offset=offset, limit=limit)
    return [_session_row(row) for row in await tx.fetch(statement, params)]


_MESSAGE_COLUMNS = ("id", "role", "content", "metadata", "created_at")


def _detail_statement(after: bool) -> Compiled:
    """The session (kind 0) and a page of its messages (kind 1) as one UNION ALL: one round
    trip and one snapshot without a transaction. Each row fills only its own kind's columns."""
    session_columns = [*(_s[name] for name in _SESSION_COLUMNS)]
    message_columns = [_m[name] for name in _MESSAGE_COLUMNS]
    session = select(
        literal_column("0").label("kind"),
        *session_columns,
        _message_count(_s.tenant_id, _s.session_id),
        *(null().cast(column.type) for column in message_columns),
    ).where(_s.tenant_id == _TENANT, _s.session_id == _SESSION)
    conditions = [_m.tenant_id == _TENANT, _m.session_id == _SESSION]
    if after:
        conditions.append(
            tuple_(_m.created_at, _m.id)
            > tuple_(_time("after_created_at"), bindparam("after_id", type_=_m.id.type))
        )
    page = (
        select(*message_columns)
        .where(*conditions)
        .order_by(_m.created_at, _m.id)
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )
    messages = select(
        literal_column("1"),
        *(null().cast(column.type) for column in session_columns),
        null().cast(BigInteger),
        *page.c,
    )
    return compile_statement(union_all(session, messages))


_DETAIL = {after: _detail_statement(after) for after in (False, True)}
_MESSAGE_FIELDS = slice(2 + len(_SESSION_COLUMNS), None)


async def session_detail(
    database: Database,
    *,
    tenant_id: str,
    session_id: str,
    after: Cursor | None,
    limit: int,
) -> tuple[SessionRow | None, list[MessageRow]]:
    """The session and its messages after `after`, oldest first (ties by id); (None, []) when
    the tenant has no such session."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "session_id": session_id, "limit": limit}
    if after is not None:
        params.update(after_created_at=after.created_at, after_id=int(after.key))
    session: SessionRow | None = None
    messages: list[MessageRow] = []
    for row in await database.fetch(_DETAIL[after is not None], params):
        if row[0] == 0:
            session = _session_row(row[1 : 2 + len(_SESSION_COLUMNS)])
        else:
            messages.append(MessageRow(*row[_MESSAGE_FIELDS]))
    if session is None:
        return None, []
    # UNION ALL keeps no order of its own; the page's order is restored here.
    messages.sort(key=lambda message: (message.created_at, message.id))
    return session, messages


# One statement, so concurrent writers cannot lose each other's keys: PostgreSQL re-reads the
# newest row version before applying the SET, and `||` / `-` touch only `status` and `endTime`.
# endTime is stamped when a session becomes closed/expired from any other status, kept when it
# moves between closed and expired, and removed when it becomes active again. Rows already in the
# requested status, and rows whose metadata is not an object, are not touched.
#
# When nothing was updated, the same statement reads the row as it stands, so a no-op costs one
# round trip too. FOR SHARE makes that read return the newest committed version (READ COMMITTED
# follows the update chain for locking reads), so it never reports the pre-snapshot status that a
# concurrent writer has just changed; FOR KEY SHARE would not, since it does not conflict with
# the writer's non-key update and keeps the old version (tests/integration/test_faults.py).
_STATUS_OF_S = EFFECTIVE_STATUS_SQL.replace("metadata", "s.metadata")
_UPDATE_STATUS = compile_statement(
    text(
        # Only module constants are interpolated; every value is a bind parameter.
        f"""
    WITH updated AS (
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
      RETURNING s.tenant_id, s.session_id, s.channel_type, s.metadata, s.created_at, s.updated_at
    ), unchanged AS (
      SELECT c.tenant_id, c.session_id, c.channel_type, c.metadata, c.created_at, c.updated_at
      FROM chat_sessions AS c
      WHERE c.tenant_id = :tenant_id
        AND c.session_id = :session_id
        AND NOT EXISTS (SELECT FROM updated)
      FOR SHARE
    ), result AS (
      SELECT true AS changed, * FROM updated
      UNION ALL
      SELECT false, * FROM unchanged
    )
    SELECT r.changed, r.tenant_id, r.session_id, r.channel_type, r.metadata, r.created_at,
      r.updated_at, COALESCE((SELECT n FROM chat_session_message_counts AS m
        WHERE m.tenant_id = r.tenant_id AND m.session_id = r.session_id), 0) AS message_count
    FROM result AS r
    """  # noqa: S608
    )
)


@dataclass(frozen=True, slots=True)
class StatusUpdateResult:
    """What a status update found: the session afterwards (None when the tenant has no such
    session) and whether this call changed it."""

    session: SessionRow | None
    changed: bool


async def set_session_status(
    database: Database, *, tenant_id: str, session_id: str, status: str
) -> StatusUpdateResult:
    """Set the session's stored status unless it already has it or its metadata is not an
    object (then it is returned unchanged), in one statement."""
    rows = await database.fetch(
        _UPDATE_STATUS, {"tenant_id": tenant_id, "session_id": session_id, "status": status}
    )
    if not rows:
        return StatusUpdateResult(None, changed=False)
    return StatusUpdateResult(_session_row(rows[0][1:]), changed=bool(rows[0][0]))
