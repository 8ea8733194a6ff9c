"""Data access: every query the service issues. Each takes the Database it runs on first, the
rest by keyword, and filters on tenant_id. Every call is one statement, so one round trip and
one snapshot; nothing here opens a transaction or knows about gRPC.

Statements are SQLAlchemy Core, built and compiled once per shape (which optional filters are
present) with bound parameters; a call only binds values (see server.data.statements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Date,
    DateTime,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    exists,
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
from sqlalchemy.sql.selectable import NamedFromClause

from server.data.schema import (
    ACCEPTS_STATUS_SQL,
    EFFECTIVE_STATUS_SQL,
    END_TIME_TEXT_SQL,
    message_count_deltas_table,
    message_counts_table,
    messages_table,
    session_count_deltas_table,
    session_counts_table,
    sessions_table,
)
from server.data.statements import Compiled, Database, compile_statement
from server.domain.counting import CountPlan, Range
from server.domain.time_keys import INFINITY_KEY, MINUS_INFINITY_KEY
from server.transport.page_tokens import Cursor
from server.transport.validation import SessionFilters

_s = sessions_table.c
_m = messages_table.c
_n = message_counts_table.c
_dn = message_count_deltas_table.c


def _bucket_rows(table: Any) -> Select[Any]:
    return select(table.c.tenant_id, table.c.day, table.c.status, table.c.channel_type, table.c.n)


# A bucket's count is its folded counter plus the deltas not folded yet (migration 0004); read
# together in the page's statement, they are exact in its snapshot. The planner pushes each
# condition into both branches, so both are read through their (tenant_id, day) indexes.
_c = (
    union_all(_bucket_rows(session_counts_table), _bucket_rows(session_count_deltas_table))
    .subquery("buckets")
    .c
)


def _over(rule_sql: str, table: str) -> str:
    """A status rule (server.data.schema) applied to `table`.metadata."""
    return rule_sql.replace("metadata", f"{table}.metadata")


# Literal (not bound) expressions: PostgreSQL matches the status one to the status index.
_effective_status: ColumnElement[str] = literal_column(
    _over(EFFECTIVE_STATUS_SQL, "chat_sessions"), Text
)


# Row types are not frozen: a frozen dataclass sets each field through object.__setattr__, which
# made building one 5x slower (0.81 vs 0.17 us for 8 fields), once per row of every page.
@dataclass(slots=True)
class SessionRow:
    """A session as read from chat_sessions, with its message count."""

    tenant_id: str
    session_id: str
    channel_type: str | None
    status: str  # as displayed: EFFECTIVE_STATUS_SQL
    end_time: str | None  # the stored endTime text, when it is a JSON string
    created_key: int  # the stored time's sort key (server.domain.time_keys), as are all row times
    updated_key: int
    message_count: int


@dataclass(slots=True)
class MessageRow:
    """A message as read from chat_messages."""

    id: int
    role: str | None
    content: str | None
    metadata: Any
    created_key: int


# Row times come as their exact sort keys (server.domain.time_keys) rather than timestamptz:
# a BIGINT decodes faster than a datetime, and a key keeps what a datetime cannot ('infinity',
# year 20000), so page tokens carry the stored sort key itself (EXTRACT gives an exact NUMERIC
# since PostgreSQL 14).
_KEY_SQL = (
    "CAST(CASE WHEN {0} < TIMESTAMPTZ '290000-01-01Z' AND {0} > TIMESTAMPTZ '-infinity' "
    "THEN EXTRACT(EPOCH FROM {0}) * 1000000 - 946684800000000 "
    # Near the end of the range EXTRACT(EPOCH) falls back to float; an interval stays exact.
    "WHEN isfinite({0}) THEN EXTRACT(EPOCH FROM {0} - TIMESTAMPTZ '2000-01-01Z') * 1000000 "
    "WHEN {0} > TIMESTAMPTZ 'epoch' THEN 9223372036854775807 "
    "ELSE -9223372036854775808 END AS BIGINT)"
)
_DAY_US = 86_400_000_000


def _key(column: str) -> Label[int]:
    return literal_column(_KEY_SQL.format(column), BigInteger).label(
        column.rpartition(".")[2].replace("_at", "_key")
    )


def _time_of_key(name: str) -> ColumnElement[datetime]:
    """The stored time the bound key `name` stands for, exactly: calendar arithmetic on a
    timestamp without time zone (no daylight saving), whole days then microseconds (no float
    rounding). It depends on the bound key alone, so it is evaluated once per statement and
    still bounds an index range."""
    key = bindparam(name, type_=BigInteger)
    days = key.op("/")(literal_column(str(_DAY_US))).op("*")(literal_column("INTERVAL '1 day'"))
    micros = key.op("%")(literal_column(str(_DAY_US))).op("*")(
        literal_column("INTERVAL '1 microsecond'")
    )
    finite = func.timezone(
        literal_column("'UTC'"), literal_column("TIMESTAMP '2000-01-01'") + days + micros
    )
    return case(
        (key == literal_column(str(INFINITY_KEY)), literal_column("TIMESTAMPTZ 'infinity'")),
        (
            key == literal_column(str(MINUS_INFINITY_KEY)),
            literal_column("TIMESTAMPTZ '-infinity'"),
        ),
        else_=finite,
    )


def _session_columns(source: NamedFromClause) -> tuple[ColumnElement[Any], ...]:
    """A SessionRow's fields (but the message count) read from `source`: chat_sessions or a
    subquery of its columns.

    The status and end time are read in SQL rather than from decoded metadata: a list page then
    decodes no JSON at all, and the status is exactly what the status filter and counters use.
    Reading them costs per row, so a page computes them only for the rows it returns, never for
    the rows its OFFSET skips.
    """
    name = source.name
    return (
        source.c.tenant_id,
        source.c.session_id,
        source.c.channel_type,
        literal_column(_over(EFFECTIVE_STATUS_SQL, name), Text).label("status"),
        literal_column(_over(END_TIME_TEXT_SQL, name), Text).label("end_time"),
        _key(f"{name}.created_at"),
        _key(f"{name}.updated_at"),
    )


_SESSION_COLUMNS = _session_columns(sessions_table)
# What a page reads before it computes the fields, for its own rows only.
_SESSION_SOURCE = (
    _s.tenant_id,
    _s.session_id,
    _s.channel_type,
    _s.metadata,
    _s.created_at,
    _s.updated_at,
)

_TENANT = bindparam("tenant_id", type_=_s.tenant_id.type)
_SESSION = bindparam("session_id", type_=_s.session_id.type)
_TIME = _s.created_at.type

# The tenant's unfolded message deltas per session, for a page of sessions: one index range for
# the page rather than one probe per row.
_PENDING_MESSAGES = (
    select(_dn.session_id, func.sum(_dn.n).label("n"))
    .where(_dn.tenant_id == _TENANT)
    .group_by(_dn.session_id)
    .subquery("pending_messages")
)


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


_INT64_MAX = 2**63 - 1


def _count(value: ColumnElement[Any]) -> ColumnElement[int]:
    """A sum of counters as a BIGINT (not the NUMERIC a SUM of BIGINT gives, which the driver
    would decode as a Decimal), within 0 and 2^63-1: counters that drifted (negative, or absurd
    after a bypassed trigger) must never fail a call."""
    return cast(
        func.least(func.greatest(value, literal_column("0")), literal_column(str(_INT64_MAX))),
        BigInteger,
    )


def _folded_message_count(tenant_id: ColumnElement[str], session_id: ColumnElement[str]) -> Any:
    return func.coalesce(
        select(_n.n)
        .where(_n.tenant_id == tenant_id, _n.session_id == session_id)
        .scalar_subquery(),
        0,
    )


def _message_count(tenant_id: ColumnElement[str], session_id: ColumnElement[str]) -> Any:
    """One session's message count: its folded counter plus its unfolded deltas."""
    pending = (
        select(func.sum(_dn.n)).where(_dn.tenant_id == tenant_id, _dn.session_id == session_id)
    ).scalar_subquery()
    return _count(_folded_message_count(tenant_id, session_id) + func.coalesce(pending, 0)).label(
        "message_count"
    )


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


_KIND_DAY, _KIND_NEWER_EDGE, _KIND_OLDER_EDGE = 0, 1, 2
_EDGES = ((_KIND_NEWER_EDGE, "newer"), (_KIND_OLDER_EDGE, "older"))


def _bounds(part: Range | None) -> tuple[bool, bool] | None:
    return None if part is None else (part.start is not None, part.end is not None)


_Bounds = tuple[bool, bool] | None


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


def _page_select(shape: _Shape, *, after: bool, seek: CTE | None) -> Select[Any]:
    """A page of sessions with their message counts, newest first: after a keyset cursor, or
    below and past what `seek` found (a deep page by number), or from the start."""
    conditions = _filter_conditions(shape)
    if after:
        # A row comparison is an index range condition; the equivalent OR is not.
        conditions.append(
            tuple_(_s.created_at, _s.session_id)
            < tuple_(
                _time_of_key("after_created_key"),
                bindparam("after_key", type_=_s.session_id.type),
            )
        )
    page = (
        select(*_SESSION_SOURCE)
        .where(*conditions)
        .order_by(_s.created_at.desc(), _s.session_id.desc())
        .limit(bindparam("limit", type_=Integer))
    )
    if seek is not None:
        # Both are evaluated once (InitPlans), so the bound is an index range condition.
        end = select(seek.c.segment_end).scalar_subquery()
        page = page.where(
            exists(select(seek.c.skip)),
            _s.created_at < func.coalesce(end, literal_column("'infinity'", _TIME)),
        ).offset(select(seek.c.skip).scalar_subquery())
    rows = page.subquery("page")
    pending = _PENDING_MESSAGES
    # Fields and counts are computed for the page's rows only, not for the rows OFFSET skips.
    message_count = _folded_message_count(rows.c.tenant_id, rows.c.session_id) + func.coalesce(
        pending.c.n, 0
    )
    return (
        select(*_session_columns(rows), _count(message_count).label("message_count"))
        .select_from(rows.outerjoin(pending, pending.c.session_id == rows.c.session_id))
        .order_by(rows.c.created_at.desc(), rows.c.session_id.desc())
    )


def _seek(parts: CTE) -> CTE:
    """The counted segment holding row `offset` (newest first): its end, and how many of the
    matching rows below that end come before the row. No row when `offset` is past the end.

    Each part covers rows older than its end: a whole day ends at the next midnight (UTC), an
    edge at its own end. Parts never share an end, so ordering by it orders them in time.
    """
    day_end = func.timezone(
        literal_column("'UTC'"), cast(parts.c.day + literal_column("1"), DateTime)
    )
    segment_end = case(
        (parts.c.kind == _KIND_DAY, day_end),
        (parts.c.kind == _KIND_NEWER_EDGE, _time("newer_end")),
        else_=_time("older_end"),
    )
    newest_first = segment_end.desc().nulls_first()
    segments = select(
        segment_end.label("segment_end"),
        parts.c.n,
        func.sum(parts.c.n).over(order_by=newest_first, rows=(None, 0)).label("upto"),
    ).subquery("segments")
    offset = bindparam("offset", type_=BigInteger)
    return (
        select(
            segments.c.segment_end,
            cast(offset - (segments.c.upto - segments.c.n), BigInteger).label("skip"),
        )
        .where(segments.c.upto > offset)
        .order_by(segments.c.segment_end.desc().nulls_first())
        .limit(1)
        .cte("seek")
    )


@lru_cache(maxsize=256)
def _page_statement(
    shape: _Shape, days: _Bounds, edges: tuple[_Bounds, _Bounds], after: bool, seek: bool
) -> Compiled:
    parts = _count_parts(shape, days, edges, seek).cte("parts")
    total = _count(func.coalesce(func.sum(parts.c.n), 0))
    totals = select(total.label("total")).subquery("totals")
    page = _page_select(shape, after=after, seek=_seek(parts) if seek else None).subquery("page")
    # The LEFT JOIN keeps the total when the page is empty.
    return compile_statement(
        select(totals.c.total, *page.c)
        .select_from(totals.outerjoin(page, true()))
        .order_by(page.c.created_key.desc(), page.c.session_id.desc())
    )


async def list_page(
    database: Database,
    *,
    tenant_id: str,
    filters: SessionFilters,
    count_plan: CountPlan,
    after: Cursor | None,
    offset: int,
    limit: int,
) -> tuple[int, list[SessionRow]]:
    """The exact total and a page of the tenant's matching sessions, newest first: after the
    keyset cursor `after`, else from row `offset` on, in one statement (one round trip and one
    snapshot, no transaction).

    A deep page by number starts from the per-day counters rather than OFFSETting the tenant:
    the segment holding row `offset` is found from running sums of the counts, and only the rows
    of that segment before it are skipped.
    """
    statement = _page_statement(
        _Shape.of(filters), *_count_shape(count_plan), after is not None, offset > 0
    )
    params = _count_params(tenant_id, filters, count_plan)
    params.update(offset=offset, limit=limit)
    if after is not None:
        params.update(after_created_key=after.created_key, after_key=after.key)
    rows = await database.fetch(statement, params)
    total = int(rows[0][0]) if rows else 0
    return total, [_session_row(row[1:]) for row in rows if row[2] is not None]


_MESSAGE_COLUMNS = (_m.id, _m.role, _m.content, _m.metadata, _key("chat_messages.created_at"))


def _detail_statement(after: bool) -> Compiled:
    """The session with its metadata (kind 0) and a page of its messages (kind 1) as one UNION
    ALL: one round trip and one snapshot without a transaction. Each row fills only its own
    kind's columns."""
    message_columns = _MESSAGE_COLUMNS
    session = select(
        literal_column("0").label("kind"),
        *_SESSION_COLUMNS,
        _message_count(_s.tenant_id, _s.session_id),
        _s.metadata.label("session_metadata"),
        *(null().cast(column.type) for column in message_columns),
    ).where(_s.tenant_id == _TENANT, _s.session_id == _SESSION)
    conditions = [_m.tenant_id == _TENANT, _m.session_id == _SESSION]
    if after:
        conditions.append(
            tuple_(_m.created_at, _m.id)
            > tuple_(_time_of_key("after_created_key"), bindparam("after_id", type_=_m.id.type))
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
        *(null().cast(column.type) for column in _SESSION_COLUMNS),
        null().cast(BigInteger),
        null().cast(_s.metadata.type),
        *page.c,
    )
    return compile_statement(union_all(session, messages))


_DETAIL = {after: _detail_statement(after) for after in (False, True)}
# Row layout: kind, the session's fields and message count, its metadata, the message's fields.
_SESSION_ROW = slice(1, 2 + len(_SESSION_COLUMNS))
_SESSION_METADATA = _SESSION_ROW.stop
_MESSAGE_ROW = slice(_SESSION_METADATA + 1, None)


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """A session, its stored metadata, and one page of its messages (oldest first)."""

    session: SessionRow
    metadata: Any
    messages: list[MessageRow]


async def session_detail(
    database: Database,
    *,
    tenant_id: str,
    session_id: str,
    after: Cursor | None,
    limit: int,
) -> SessionDetail | None:
    """The session and its messages after `after`, oldest first (ties by id); None when the
    tenant has no such session."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "session_id": session_id, "limit": limit}
    if after is not None:
        params.update(after_created_key=after.created_key, after_id=int(after.key))
    found: tuple[SessionRow, Any] | None = None
    messages: list[MessageRow] = []
    for row in await database.fetch(_DETAIL[after is not None], params):
        if row[0] == 0:
            found = _session_row(row[_SESSION_ROW]), row[_SESSION_METADATA]
        else:
            messages.append(MessageRow(*row[_MESSAGE_ROW]))
    if found is None:
        return None
    # UNION ALL keeps no order of its own; the page's order is restored here.
    messages.sort(key=lambda message: (message.created_key, message.id))
    return SessionDetail(*found, messages)


# One statement, so concurrent writers cannot lose each other's keys: PostgreSQL re-reads the
# newest row version before applying the SET, and `||` / `-` touch only `status` and `endTime`.
# endTime is stamped when a session becomes closed/expired from any other status, kept when it
# moves between closed and expired, and removed when it becomes active again. Rows already in the
# requested status, and rows whose metadata is not an object, are not touched.
#
# When nothing was updated, the same statement reads the row as it stands, so a no-op costs one
# round trip too. If the statement's snapshot already shows the requested status, that is the
# answer, read without a lock: the call takes effect at that snapshot. Otherwise the UPDATE was
# skipped because a concurrent writer got there first (or the metadata is not an object), and
# the row is read FOR SHARE, which returns the newest committed version (READ COMMITTED follows
# the update chain for locking reads), so it never reports the pre-snapshot status that writer
# has just changed; FOR KEY SHARE would not, since it does not conflict with the writer's non-key
# update and keeps the old version (tests/integration/test_faults.py). The locked read carries
# no status condition: READ COMMITTED rechecks its conditions on the newest version. Keeping the
# lock off the plain no-op matters: a row lock gives the statement a transaction id, and its
# commit a WAL flush.
_STATUS_OF_S = _over(EFFECTIVE_STATUS_SQL, "s")
_ACCEPTS_OF_S = _over(ACCEPTS_STATUS_SQL, "s")
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
              WHEN {_STATUS_OF_S} IN ('closed', 'expired') AND s.metadata ? 'endTime'
                THEN s.metadata -> 'endTime'
              ELSE to_jsonb(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
            END)
        END,
        updated_at = now()
      WHERE s.tenant_id = :tenant_id
        AND s.session_id = :session_id
        AND {_STATUS_OF_S} IS DISTINCT FROM CAST(:status AS text)
        AND {_ACCEPTS_OF_S}
      RETURNING s.*
    ), already AS (
      SELECT s.* FROM chat_sessions AS s
      WHERE s.tenant_id = :tenant_id
        AND s.session_id = :session_id
        AND NOT EXISTS (SELECT FROM updated)
        AND {_STATUS_OF_S} = CAST(:status AS text)
    ), overtaken AS (
      SELECT s.* FROM chat_sessions AS s
      WHERE s.tenant_id = :tenant_id
        AND s.session_id = :session_id
        AND NOT EXISTS (SELECT FROM updated)
        AND NOT EXISTS (SELECT FROM already)
      FOR SHARE
    ), result AS (
      SELECT true AS changed, * FROM updated
      UNION ALL
      SELECT false, * FROM already
      UNION ALL
      SELECT false, * FROM overtaken
    )
    SELECT s.changed, s.tenant_id, s.session_id, s.channel_type, {_STATUS_OF_S} AS status,
      {_over(END_TIME_TEXT_SQL, "s")} AS end_time,
      {_KEY_SQL.format("s.created_at")} AS created_key,
      {_KEY_SQL.format("s.updated_at")} AS updated_key,
      CAST(LEAST(GREATEST(COALESCE((SELECT n FROM chat_session_message_counts AS m
        WHERE m.tenant_id = s.tenant_id AND m.session_id = s.session_id), 0)
        + COALESCE((SELECT sum(n) FROM chat_message_count_deltas AS d
        WHERE d.tenant_id = s.tenant_id AND d.session_id = s.session_id), 0), 0),
        {_INT64_MAX}) AS BIGINT) AS message_count,
      {_ACCEPTS_OF_S} AS accepts_status
    FROM result AS s
    """  # noqa: S608
    )
)


@dataclass(frozen=True, slots=True)
class StatusUpdateResult:
    """What a status update found: the session afterwards (None when the tenant has no such
    session) and whether this call changed it."""

    session: SessionRow | None
    changed: bool
    accepts_status: bool  # False when the stored metadata is neither an object nor null


async def set_session_status(
    database: Database, *, tenant_id: str, session_id: str, status: str
) -> StatusUpdateResult:
    """Set the session's stored status unless it already has it or its metadata is not an
    object (then it is returned unchanged), in one statement."""
    rows = await database.fetch(
        _UPDATE_STATUS, {"tenant_id": tenant_id, "session_id": session_id, "status": status}
    )
    if not rows:
        return StatusUpdateResult(None, changed=False, accepts_status=False)
    changed, *session, accepts_status = rows[0]
    return StatusUpdateResult(_session_row(session), changed=changed, accepts_status=accepts_status)
