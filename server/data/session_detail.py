"""One session with its stored metadata and a page of its messages, oldest first, in one
statement (one round trip, one snapshot, no transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    bindparam,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)

from server.data.expressions import message_count, session_fields, sort_key, time_of_key
from server.data.rows import MessageRow, SessionRow
from server.data.schema import messages_table, sessions_table
from server.data.statements import Compiled, Database, compile_statement
from server.domain.filters import Position

_s = sessions_table.c
_m = messages_table.c
_TENANT = bindparam("tenant_id", type_=_s.tenant_id.type)
_SESSION = bindparam("session_id", type_=_s.session_id.type)

_MESSAGE_COLUMNS = (
    _m.id.label("message_id"),
    _m.role,
    _m.content,
    _m.metadata.label("message_metadata"),
    sort_key(_m.created_at).label("message_created_key"),
)


def _statement(after: bool) -> Compiled:
    """The session (`is_session`) and a page of its messages as one UNION ALL; each row fills
    only its own kind's columns. The first branch names the columns of both."""
    session_columns = (
        *session_fields(sessions_table),
        message_count(_s.tenant_id, _s.session_id),
        _s.metadata.label("session_metadata"),
    )
    session = select(
        literal_column("true").label("is_session"),
        *session_columns,
        *(null().cast(column.type).label(column.name) for column in _MESSAGE_COLUMNS),
    ).where(_s.tenant_id == _TENANT, _s.session_id == _SESSION)
    conditions = [_m.tenant_id == _TENANT, _m.session_id == _SESSION]
    if after:
        conditions.append(
            tuple_(_m.created_at, _m.id)
            > tuple_(time_of_key("after_created_key"), bindparam("after_id", type_=_m.id.type))
        )
    page = (
        select(*_MESSAGE_COLUMNS)
        .where(*conditions)
        .order_by(_m.created_at, _m.id)
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )
    messages = select(
        literal_column("false"),
        *(null().cast(column.type) for column in session_columns[:-2]),
        null().cast(BigInteger),
        null().cast(_s.metadata.type),
        *page.c,
    )
    return compile_statement(union_all(session, messages))


_STATEMENTS = {after: _statement(after) for after in (False, True)}


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
    after: Position | None,
    limit: int,
) -> SessionDetail | None:
    """The session and its messages after `after` (a message's created key and id), oldest
    first, ties by id; None when the tenant has no such session."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "session_id": session_id, "limit": limit}
    if after is not None:
        params.update(after_created_key=after.created_key, after_id=int(after.key))
    found: SessionDetail | None = None
    messages: list[MessageRow] = []
    for row in await database.fetch(_STATEMENTS[after is not None], params):
        if row["is_session"]:
            found = SessionDetail(SessionRow.of(row), row["session_metadata"], messages)
        else:
            messages.append(
                MessageRow(
                    row["message_id"],
                    row["role"],
                    row["content"],
                    row["message_metadata"],
                    row["message_created_key"],
                )
            )
    # UNION ALL keeps no order of its own; the page's order is restored here.
    messages.sort(key=lambda message: (message.created_key, message.id))
    return found
