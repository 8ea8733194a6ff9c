"""What the queries return: plain rows, built from result columns by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


# Not frozen: a frozen dataclass sets each field through object.__setattr__, measurably slower
# for a type built once per row of every page (BENCHMARKS.md).
@dataclass(slots=True)
class SessionRow:
    """A session as read from chat_sessions, with its message count."""

    tenant_id: str
    session_id: str
    channel_type: str | None
    status: str  # as displayed (server.data.status_sql.displayed_status)
    end_time: str | None  # the stored endTime text, when it is a JSON string
    created_key: int  # the stored time's sort key (server.domain.time_keys), as are all times
    updated_key: int
    message_count: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> SessionRow:
        """The session in a result row holding the SESSION_FIELDS columns."""
        return cls(
            row["tenant_id"],
            row["session_id"],
            row["channel_type"],
            row["status"],
            row["end_time"],
            row["created_key"],
            row["updated_key"],
            row["message_count"],
        )


SESSION_FIELDS = tuple(SessionRow.__dataclass_fields__)


@dataclass(slots=True)
class MessageRow:
    """A message as read from chat_messages."""

    id: int
    role: str | None
    content: str | None
    metadata: Any
    created_key: int


@dataclass(frozen=True, slots=True)
class WatchStart:
    """Where the change log stood in a read's snapshot: its epoch, last position, and the
    snapshot itself (pg_current_snapshot() as text)."""

    epoch: int
    position: int
    snapshot: str
