"""Setting a session's status: one atomic statement that also reads the row back.

One statement, so concurrent writers cannot lose each other's keys: PostgreSQL re-reads the
newest row version before applying the SET, and the new metadata (status_sql.with_status)
touches only `status` and `endTime`. Rows already in the requested status, and rows whose
metadata is not an object, are not touched.

When nothing was updated, the same statement reads the row as it stands, so a no-op costs one
round trip too:
- `already`: the statement's snapshot shows the requested status. That is the answer, read
  without a lock: the call takes effect at that snapshot. A row lock would give the statement
  a transaction id, and its commit a WAL flush.
- `overtaken`: otherwise the UPDATE was skipped because a concurrent writer got there first (or
  the metadata is not an object), and the row is read FOR SHARE, which returns the newest
  committed version (READ COMMITTED follows the update chain for locking reads), so it never
  reports the pre-snapshot status that writer has just changed. FOR KEY SHARE would not: it
  does not conflict with the writer's non-key update and keeps the old version
  (tests/integration/test_faults.py). It carries no status condition: READ COMMITTED rechecks
  its conditions on the newest version.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Text,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    select,
    true,
    union_all,
    update,
)

from server.data.expressions import message_count, session_fields
from server.data.rows import SessionRow
from server.data.schema import sessions_table
from server.data.statements import Compiled, Database, compile_statement
from server.data.status_sql import accepts_status, displayed_status, with_status


def _statement() -> Compiled:
    s = sessions_table
    # Cast once: jsonb_build_object takes any type, so PostgreSQL cannot infer the parameter's.
    status = cast(bindparam("status", type_=Text), Text)
    this_session = and_(
        s.c.tenant_id == bindparam("tenant_id", type_=s.c.tenant_id.type),
        s.c.session_id == bindparam("session_id", type_=s.c.session_id.type),
    )
    updated = (
        update(s)
        .where(
            this_session,
            displayed_status(s.c.metadata).is_distinct_from(status),
            accepts_status(s.c.metadata),
        )
        .values(metadata=with_status(s.c.metadata, status), updated_at=func.now())
        .returning(*s.c)
        .cte("updated")
    )
    already = (
        select(*s.c)
        .where(
            this_session,
            ~exists().select_from(updated),
            displayed_status(s.c.metadata) == status,
        )
        .cte("already")
    )
    overtaken = (
        select(*s.c)
        .where(this_session, ~exists().select_from(updated), ~exists().select_from(already))
        .with_for_update(read=True)
        .cte("overtaken")
    )
    result = union_all(
        select(true().label("changed"), *updated.c),
        select(false(), *already.c),
        select(false(), *overtaken.c),
    ).subquery("result")
    return compile_statement(
        select(
            result.c.changed,
            *session_fields(result),
            message_count(result.c.tenant_id, result.c.session_id),
            accepts_status(result.c.metadata).label("accepts_status"),
        )
    )


_UPDATE_STATUS = _statement()


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
    row = rows[0]
    return StatusUpdateResult(
        SessionRow.of(row), changed=row["changed"], accepts_status=row["accepts_status"]
    )
