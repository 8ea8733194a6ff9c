"""The session list: an exact total and one page of a tenant's sessions, newest first, in one
statement (one round trip, one snapshot, no transaction).

The total and a deep page by number start from the per-day counters (server.domain.counting)
rather than counting or OFFSETting the tenant: the counted segment holding row `offset` is
found from running sums of the counts, and only the rows of that segment before it are
skipped. Statements are built and compiled once per shape (which filters and parts a query
has); a call only binds values.
"""

from __future__ import annotations

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
    Label,
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
    true,
    tuple_,
    union_all,
)

from server.data.expressions import (
    clamped_count,
    folded_message_count,
    number,
    session_fields,
    time_of_key,
)
from server.data.rows import SessionRow, WatchStart
from server.data.schema import (
    change_log_state_table,
    message_count_deltas_table,
    session_count_deltas_table,
    session_counts_table,
    sessions_table,
)
from server.data.statements import Compiled, Database, compile_statement
from server.data.status_sql import displayed_status
from server.domain.counting import CountPlan, Range
from server.domain.filters import Position, SessionFilters

_s = sessions_table.c
_dn = message_count_deltas_table.c
_TENANT = bindparam("tenant_id", type_=_s.tenant_id.type)
_log = change_log_state_table.c
# A hot standby's pg_current_snapshot() lists no transaction in progress (it keeps them apart),
# so there the token's snapshot sees only what is older than its xmin: a watch from it may
# repeat a change the page showed, never miss one.
_WATCH_SNAPSHOT = literal_column(
    "CASE WHEN pg_is_in_recovery() THEN CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) "
    "|| ':' || CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) || ':' "
    "ELSE CAST(pg_current_snapshot() AS text) END",
    Text,
)


def _bucket_rows(table: Any) -> Select[Any]:
    return select(table.c.tenant_id, table.c.day, table.c.status, table.c.channel_type, table.c.n)


# A bucket's count is its folded counter plus the deltas not folded yet (migration 0004); read
# together in the page's statement, they are exact in its snapshot. The planner pushes each
# condition into both branches, so both are read through their (tenant_id, day) indexes.
_buckets = (
    union_all(_bucket_rows(session_counts_table), _bucket_rows(session_count_deltas_table))
    .subquery("buckets")
    .c
)

# The tenant's unfolded message deltas per session, for a page of sessions: one index range for
# the page rather than one probe per row.
_PENDING_MESSAGES = (
    select(_dn.session_id, func.sum(_dn.n).label("n"))
    .where(_dn.tenant_id == _TENANT)
    .group_by(_dn.session_id)
    .subquery("pending_messages")
)

# What a page reads before it computes the fields, for its own rows only.
_SESSION_SOURCE = (
    _s.tenant_id,
    _s.session_id,
    _s.channel_type,
    _s.metadata,
    _s.created_at,
    _s.updated_at,
)


def _time(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=_s.created_at.type)


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


def _filter_conditions(shape: _Shape) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_s.tenant_id == _TENANT]
    if shape.status:
        conditions.append(displayed_status(_s.metadata) == bindparam("status", type_=Text))
    if shape.created_from:
        conditions.append(_s.created_at >= _time("created_from"))
    if shape.created_to:
        conditions.append(_s.created_at <= _time("created_to"))
    if shape.channel_type:
        conditions.append(_s.channel_type == bindparam("channel_type", type_=_s.channel_type.type))
    return conditions


_KIND_DAY, _KIND_NEWER_EDGE, _KIND_OLDER_EDGE = 0, 1, 2
_EDGES = ((_KIND_NEWER_EDGE, "newer"), (_KIND_OLDER_EDGE, "older"))
_Bounds = tuple[bool, bool] | None  # which ends of a part are bounded; None: no such part


def _bounds(part: Range | None) -> _Bounds:
    return None if part is None else (part.start is not None, part.end is not None)


def _count_parts(
    shape: _Shape, days: _Bounds, edges: tuple[_Bounds, _Bounds], by_day: bool
) -> Select[Any] | CompoundSelect[Any]:
    """Rows (kind, day, n): whole days from the counters, edges counted from the rows."""
    parts: list[Select[Any, Any, Any]] = []
    if days is not None:
        conditions = [_buckets.tenant_id == _TENANT]
        if shape.status:
            conditions.append(_buckets.status == bindparam("status", type_=Text))
        if shape.channel_type:
            conditions.append(
                _buckets.channel_type == bindparam("channel_type", type_=_buckets.channel_type.type)
            )
        if days[0]:
            conditions.append(_buckets.day >= bindparam("days_start", type_=Date))
        if days[1]:
            conditions.append(_buckets.day < bindparam("days_end", type_=Date))
        day_kind: Label[Any] = number(_KIND_DAY).label("kind")
        if by_day:
            parts.append(
                select(day_kind, _buckets.day.label("day"), func.sum(_buckets.n).label("n"))
                .where(*conditions)
                .group_by(_buckets.day)
            )
        else:  # one row: a total needs no per-day breakdown
            parts.append(
                select(
                    day_kind, null().cast(Date).label("day"), func.sum(_buckets.n).label("n")
                ).where(*conditions)
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
                number(kind).label("kind"),
                null().cast(Date).label("day"),
                func.count().label("n"),
            )
            .select_from(sessions_table)
            .where(*conditions)
        )
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _page_select(shape: _Shape, *, after: bool, seek: CTE | None) -> Select[Any]:
    """A page of sessions with their message counts, newest first: after a keyset position, or
    below and past what `seek` found (a deep page by number), or from the start."""
    conditions = _filter_conditions(shape)
    if after:
        # A row comparison is an index range condition; the equivalent OR is not.
        conditions.append(
            tuple_(_s.created_at, _s.session_id)
            < tuple_(
                time_of_key("after_created_key"),
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
            _s.created_at < func.coalesce(end, literal_column("'infinity'", _s.created_at.type)),
        ).offset(select(seek.c.skip).scalar_subquery())
    rows = page.subquery("page")
    pending = _PENDING_MESSAGES
    # Fields and counts are computed for the page's rows only, not for the rows OFFSET skips.
    count = folded_message_count(rows.c.tenant_id, rows.c.session_id) + func.coalesce(
        pending.c.n, number(0)
    )
    return (
        select(*session_fields(rows), clamped_count(count).label("message_count"))
        .select_from(rows.outerjoin(pending, pending.c.session_id == rows.c.session_id))
        .order_by(rows.c.created_at.desc(), rows.c.session_id.desc())
    )


def _seek(parts: CTE) -> CTE:
    """The counted segment holding row `offset` (newest first): its end, and how many of the
    matching rows below that end come before the row. No row when `offset` is past the end.

    Each part covers rows older than its end: a whole day ends at the next midnight (UTC), an
    edge at its own end. Parts never share an end, so ordering by it orders them in time.
    """
    day_end = func.timezone(literal_column("'UTC'"), cast(parts.c.day + number(1), DateTime))
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
    total = clamped_count(func.coalesce(func.sum(parts.c.n), number(0)))
    # Where the change log stands in this very snapshot: the page's watch token.
    totals = select(
        total.label("total"),
        select(_log.epoch).scalar_subquery().label("watch_epoch"),
        select(_log.last_position).scalar_subquery().label("watch_position"),
        _WATCH_SNAPSHOT.label("watch_snapshot"),
    ).subquery("totals")
    page = _page_select(shape, after=after, seek=_seek(parts) if seek else None).subquery("page")
    # The LEFT JOIN keeps the total when the page is empty.
    return compile_statement(
        select(*totals.c, *page.c)
        .select_from(totals.outerjoin(page, true()))
        .order_by(page.c.created_key.desc(), page.c.session_id.desc())
    )


def _params(tenant_id: str, filters: SessionFilters, count_plan: CountPlan) -> dict[str, Any]:
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "status": filters.status,
        "created_from": filters.created_from,
        "created_to": filters.created_to,
        "channel_type": filters.channel_type,
    }
    if count_plan.days is not None:
        params["days_start"] = count_plan.days.start and count_plan.days.start.date()
        params["days_end"] = count_plan.days.end and count_plan.days.end.date()
    for (_, name), edge in zip(_EDGES, (count_plan.newer_edge, count_plan.older_edge), strict=True):
        if edge is not None:
            params[f"{name}_start"], params[f"{name}_end"] = edge.start, edge.end
    return params


@dataclass(frozen=True, slots=True)
class ListedPage:
    """A page of sessions, the exact total, and where the change log stood in its snapshot."""

    total: int
    rows: list[SessionRow]
    watch: WatchStart


async def list_page(
    database: Database,
    *,
    tenant_id: str,
    filters: SessionFilters,
    count_plan: CountPlan,
    after: Position | None,
    offset: int,
    limit: int,
) -> ListedPage:
    """The exact total and a page of the tenant's matching sessions, newest first: after the
    keyset position `after`, else from row `offset` on."""
    statement = _page_statement(
        _Shape.of(filters),
        _bounds(count_plan.days),
        (_bounds(count_plan.newer_edge), _bounds(count_plan.older_edge)),
        after is not None,
        offset > 0,
    )
    params = _params(tenant_id, filters, count_plan)
    params.update(offset=offset, limit=limit)
    if after is not None:
        params.update(after_created_key=after.created_key, after_key=after.key)
    rows = await database.fetch(statement, params)
    first = rows[0]  # an empty page is one row holding the total and the log's state alone
    watch = WatchStart(first["watch_epoch"], first["watch_position"], first["watch_snapshot"])
    return ListedPage(
        first["total"], [SessionRow.of(row) for row in rows if row["session_id"] is not None], watch
    )
