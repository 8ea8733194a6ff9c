"""Reading the change log behind WatchSessions (filled by the folder, server.data.counters):
its state, the changes after a position, the sessions a stream starts with, and pruning."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Integer, Text, and_, bindparam, cast, func, select, text, true

from server.data.counters import FOLD_LOCK_KEY
from server.data.expressions import message_count, session_fields, sort_key
from server.data.rows import MessageRow, SessionRow
from server.data.schema import change_log_state_table, session_changes_table, sessions_table
from server.data.statements import Compiled, Database, compile_statement
from server.data.status_sql import displayed_status, end_time_text
from server.domain.watch import KIND_MESSAGE, KIND_REMOVED, SessionChange, WatchFilters

_c = session_changes_table.c
_s = sessions_table.c
_state = change_log_state_table.c


@dataclass(frozen=True, slots=True)
class LogState:
    """The log's epoch, its last position, the oldest position a stream may resume from, and
    the snapshot it was read in (pg_current_snapshot() as text)."""

    epoch: int
    last_position: int
    oldest_resumable: int
    snapshot: str


@dataclass(slots=True)
class LoggedChange:
    """One change of the log, with what a stream needs to show it."""

    position: int
    xid: int
    committed_key: int  # server.domain.time_keys sort key of when the folder logged it
    tenant_id: str
    kind: str
    oldest_resumable: int  # of the log when it was read: a reader behind it has missed changes
    change: SessionChange
    # The session to show: its state after the change (its last state when removed), or, for
    # a message, as it is now (None when it is gone).
    session: SessionRow | None
    # For a message: its session's status and channel when it was written (None: no session).
    message_session: tuple[str | None, str | None] | None
    message: MessageRow | None


_STATE = compile_statement(
    select(
        _state.epoch,
        _state.last_position,
        _state.oldest_resumable,
        cast(func.pg_current_snapshot(), Text).label("snapshot"),
    )
)

_current = sessions_table.alias("current")


def _neighbour(*, before: bool) -> Any:
    """For a message: the nearest change of its session before it (the session's state then),
    or after it (whose `old_*` side is that state); either is looked up by its index."""
    other = session_changes_table.alias("before" if before else "after")
    columns = (
        (other.c.exists, other.c.status, other.c.channel_type)
        if before
        else (other.c.existed, other.c.old_status, other.c.old_channel_type)
    )
    return (
        select(*(column.label(f"{other.name}_{index}") for index, column in enumerate(columns)))
        .where(
            _c.kind == KIND_MESSAGE,
            other.c.tenant_id == _c.tenant_id,
            other.c.session_id == _c.session_id,
            other.c.kind != KIND_MESSAGE,
            other.c.position < _c.position if before else other.c.position > _c.position,
        )
        .order_by(other.c.position.desc() if before else other.c.position)
        .limit(1)
        .lateral(other.name)
    )


_before, _after = _neighbour(before=True), _neighbour(before=False)
_changes = (
    select(
        _c.position,
        _c.xid,
        sort_key(_c.committed_at).label("committed_key"),
        _c.tenant_id,
        _c.session_id,
        _c.kind,
        _c.existed,
        _c.old_status,
        _c.old_channel_type,
        _c.exists,
        _c.status,
        _c.channel_type,
        end_time_text(_c.metadata).label("end_time"),
        sort_key(_c.created_at).label("created_key"),
        sort_key(_c.updated_at).label("updated_key"),
        _c.message_id,
        _c.message_role,
        sort_key(_c.message_created_at).label("message_created_key"),
        *_before.c,
        *_after.c,
        (_current.c.session_id.is_not(None)).label("present"),
        *(
            field.label(f"now_{field.key}")
            for field in session_fields(_current)
            if field.key not in ("tenant_id", "session_id")
        ),
        message_count(_c.tenant_id, _c.session_id),
        select(_state.oldest_resumable).scalar_subquery().label("oldest_resumable"),
    )
    .select_from(
        session_changes_table.outerjoin(
            _current,
            and_(_current.c.tenant_id == _c.tenant_id, _current.c.session_id == _c.session_id),
        )
        .outerjoin(_before, true())
        .outerjoin(_after, true())
    )
    .where(_c.position > bindparam("after", type_=_c.position.type))
    .order_by(_c.position)
    .limit(bindparam("limit", type_=Integer))
)
_READ = compile_statement(_changes)
# One tenant's changes (a TRUNCATE, logged for every tenant, shows as oldest_resumable).
_READ_TENANT = compile_statement(
    _changes.where(_c.tenant_id == bindparam("tenant_id", type_=_c.tenant_id.type))
)


async def log_state(database: Database) -> LogState:
    """The log's state now."""
    return _state_of((await database.fetch(_STATE, {}))[0])


def _state_of(row: asyncpg.Record) -> LogState:
    return LogState(row["epoch"], row["last_position"], row["oldest_resumable"], row["snapshot"])


async def read_changes(
    database: Database, *, after: int, limit: int, tenant_id: str | None = None
) -> list[LoggedChange]:
    """Up to `limit` changes after position `after`, in order: every tenant's (the feed, which
    hands each to its tenant's streams), or those of `tenant_id`."""
    values = {"after": after, "limit": limit, "tenant_id": tenant_id}
    rows = await database.fetch(_READ if tenant_id is None else _READ_TENANT, values)
    return [_change(row) for row in rows]


def _change(row: asyncpg.Record) -> LoggedChange:
    kind = row["kind"]
    change = SessionChange(
        row["session_id"],
        row["existed"],
        row["old_status"],
        row["old_channel_type"],
        row["exists"],
        row["status"],
        row["channel_type"],
    )
    session: SessionRow | None = None
    message = None
    message_session = None
    if kind == KIND_MESSAGE:
        message_session = _session_at_message(row)
        message = MessageRow(
            row["message_id"], row["message_role"], None, None, row["message_created_key"]
        )
        if row["present"]:
            session = _session(row, "now_", row["message_count"])
    elif row["created_key"] is not None:
        session = _session(row, "", 0 if kind == KIND_REMOVED else row["message_count"])
    return LoggedChange(
        row["position"],
        row["xid"],
        row["committed_key"],
        row["tenant_id"],
        kind,
        row["oldest_resumable"],
        change,
        session,
        message_session,
        message,
    )


def _session(row: asyncpg.Record, prefix: str, message_count: int) -> SessionRow:
    """The session in `row`'s columns named with `prefix` (the log's state, or `now_`: the
    chat_sessions row as it is)."""
    return SessionRow(
        row["tenant_id"],
        row["session_id"],
        row[f"{prefix}channel_type"],
        row[f"{prefix}status"],
        row[f"{prefix}end_time"],
        row[f"{prefix}created_key"],
        row[f"{prefix}updated_key"],
        message_count,
    )


def _session_at_message(row: asyncpg.Record) -> tuple[str | None, str | None] | None:
    """The session's (status, channel) when the message was written: after the change before
    it, else before the change after it, else (no change in the log) as it is now."""
    if row["before_0"] is not None:
        exists, status, channel_type = row["before_0"], row["before_1"], row["before_2"]
    elif row["after_0"] is not None:
        exists, status, channel_type = row["after_0"], row["after_1"], row["after_2"]
    else:
        exists, status, channel_type = row["present"], row["now_status"], row["now_channel_type"]
    return (status, channel_type) if exists else None


@dataclass(frozen=True, slots=True)
class InitialSet:
    """The sessions a stream starts with, and where in the log their snapshot stands."""

    state: LogState
    sessions: AsyncIterator[SessionRow]


def _initial_statement(filters: WatchFilters) -> Compiled:
    conditions = [_s.tenant_id == bindparam("tenant_id", type_=_s.tenant_id.type)]
    if filters.status is not None:
        conditions.append(displayed_status(_s.metadata) == bindparam("status", type_=Text()))
    if filters.channel_type is not None:
        conditions.append(_s.channel_type == bindparam("channel_type", type_=_s.channel_type.type))
    if filters.session_id is not None:
        conditions.append(_s.session_id == bindparam("session_id", type_=_s.session_id.type))
    return compile_statement(
        select(*session_fields(sessions_table), message_count(_s.tenant_id, _s.session_id))
        .where(*conditions)
        .order_by(_s.created_at.desc(), _s.session_id.desc())
    )


class InitialSetAbandonedError(Exception):
    """Raised when the reader of an initial set stopped reading for longer than its idle
    timeout: PostgreSQL ended the transaction that held the snapshot."""


@contextlib.asynccontextmanager
async def initial_set(
    database: Database,
    *,
    tenant_id: str,
    filters: WatchFilters,
    idle_timeout: float,
    batch: int = 500,
) -> AsyncIterator[InitialSet]:
    """Every session of the tenant matching `filters` now, newest first, read in one
    REPEATABLE READ snapshot together with the log's state: a stream that then follows the log
    from that state, leaving out what the snapshot saw, misses and repeats nothing.

    The transaction stays open while the caller reads, so a caller that stops reading for
    `idle_timeout` seconds has it ended by PostgreSQL (idle_in_transaction_session_timeout):
    an open transaction would hold back vacuum, and the lock it holds would queue another
    service's TRUNCATE and every writer behind it. Reading on then raises
    InitialSetAbandonedError."""
    statement = _initial_statement(filters)
    values = {
        "tenant_id": tenant_id,
        "status": filters.status,
        "channel_type": filters.channel_type,
        "session_id": filters.session_id,
    }
    pauses = _Pauses()
    try:
        async with (
            database.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            await connection.execute(
                f"SET LOCAL idle_in_transaction_session_timeout = {int(idle_timeout * 1000)}"
            )
            state = _state_of(await connection.fetchrow(_STATE.sql))
            cursor = await connection.cursor(statement.sql, *statement.arguments(values))
            yield InitialSet(state, pauses.rows(cursor, batch))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        if pauses.idle < idle_timeout:
            raise
        raise InitialSetAbandonedError() from error


class _Pauses:
    """How long the connection sat idle before its latest fetch: the caller's time with the
    rows of the batch before. That long, and PostgreSQL ended the transaction."""

    def __init__(self) -> None:
        self.idle = 0.0

    async def rows(self, cursor: Any, batch: int) -> AsyncIterator[SessionRow]:
        while rows := await cursor.fetch(batch):
            handed_out = time.monotonic()
            for row in rows:
                yield SessionRow.of(row)
            self.idle = time.monotonic() - handed_out


# Older than the retention window: gone, and no stream may resume before what is left. One
# instance at a time (the fold lock, taken first as the folder does), at most :batch changes a
# round so the lock is held briefly; `committed_at` grows with `position`, so the cut is read
# from the oldest end of the primary key.
PRUNE_BATCH = 50_000
_PRUNE = compile_statement(
    text(
        """
    WITH oldest AS (
      SELECT position, committed_at FROM chat_session_changes ORDER BY position LIMIT :batch
    ), cut AS (
      SELECT max(position) AS through FROM oldest
       WHERE committed_at < statement_timestamp() - make_interval(secs => :retention)
    ), pruned AS (
      DELETE FROM chat_session_changes WHERE position <= (SELECT through FROM cut)
    )
    UPDATE chat_change_log_state SET oldest_resumable = (SELECT through FROM cut)
     WHERE (SELECT through FROM cut) > oldest_resumable
    RETURNING oldest_resumable
    """
    )
)


async def prune(database: Database, *, retention: float) -> int | None:
    """Drop the changes logged more than `retention` seconds ago; the new oldest resumable
    position, or None when nothing was pruned (or another instance holds the lock)."""
    async with (
        database.connection() as connection,
        connection.transaction(isolation="read_committed"),
    ):
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", FOLD_LOCK_KEY):
            return None
        value: int | None = await connection.fetchval(
            _PRUNE.sql, *_PRUNE.arguments({"retention": retention, "batch": PRUNE_BATCH})
        )
        return value
