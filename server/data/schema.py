"""The schema other services share with us: `chat_sessions` and `chat_messages`.

Names and meanings are a contract with the services that write these tables. Every primary,
unique and foreign key leads with tenant_id so the tables can be distributed by tenant
(Citus `create_distributed_table(..., 'tenant_id')`) without change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from server.data.status_sql import displayed_status


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (SQLAlchemy has no type for it)."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        """The type's name in DDL."""
        return "xid8"


class Base(DeclarativeBase):
    """Declarative base with constraint names Alembic can rely on."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class ChatSession(Base):
    """One chat session of one tenant; its status lives in `metadata` (`status`, `endTime`)."""

    __tablename__ = "chat_sessions"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    channel_type: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[Any] = mapped_column("metadata", JSONB(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class ChatMessage(Base):
    """One message of a chat session; assistant messages' `metadata` feeds the trace."""

    __tablename__ = "chat_messages"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # Nullable because other writers have been seen to leave them empty; reads must cope.
    role: Mapped[str | None] = mapped_column(String(32))
    content: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[Any] = mapped_column("metadata", JSONB(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "session_id"],
            ["chat_sessions.tenant_id", "chat_sessions.session_id"],
            ondelete="CASCADE",
        ),
        # Messages of one session, oldest first, tie-broken by id; also serves the counts.
        Index(
            "ix_chat_messages_tenant_session_created", "tenant_id", "session_id", "created_at", "id"
        ),
    )


# How many sessions a tenant has per UTC day, effective status and channel, as folded so far.
# The triggers (migration 0004) never write it: they append to session_count_deltas, and the
# folder (server.data.counters) moves committed deltas here. A count is counters + deltas, read in
# one statement. Plain tables (no ORM class): nothing maps rows of them.
def _bucket_columns() -> tuple[Column[Any], ...]:
    """A session-count bucket and its count: the columns of the counters and their deltas."""
    return (
        Column("tenant_id", String(128), nullable=False),
        Column("day", Date, nullable=False),
        Column("status", Text, nullable=False),
        Column("channel_type", String(255)),
        Column("n", BigInteger, nullable=False),
    )


session_counts_table = Table(
    "chat_session_counts",
    Base.metadata,
    *_bucket_columns(),
    Index(
        "uq_chat_session_counts_bucket",
        "tenant_id",
        "day",
        "status",
        "channel_type",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
    Index("ix_chat_session_counts_zero", "tenant_id", "day", postgresql_where=text("n = 0")),
)


# Changes to session_counts not folded yet, appended by the writers' triggers. No key: an
# insert never waits for another writer. One index, for the readers (migration 0004 says why).
def _change_columns() -> tuple[Column[Any], ...]:
    """What a delta row says about the change behind it (migration 0005): `op` (I, U, D, T;
    NULL on rows appended before 0005), the writer's transaction and the order it was made in."""
    return (
        Column("op", CHAR(1)),
        Column("xid", XID8, server_default=text("pg_current_xact_id()")),
        Column("seq", BigInteger, server_default=text("nextval('chat_change_seq')")),
    )


session_count_deltas_table = Table(
    "chat_session_count_deltas",
    Base.metadata,
    *_bucket_columns(),
    *_change_columns(),
    # The session after the change (before it, for a delete or the old half of a move).
    Column("session_id", String(255)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("metadata", JSONB(none_as_null=True)),
    Index("ix_chat_session_count_deltas_tenant", "tenant_id", "day"),
)


# Messages per session, folded the same way from message_count_deltas: listing or inspecting a
# huge session never counts its messages.
message_counts_table = Table(
    "chat_session_message_counts",
    Base.metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("session_id", String(255), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Index(
        "ix_chat_session_message_counts_zero",
        "tenant_id",
        "session_id",
        postgresql_where=text("n = 0"),
    ),
)

message_count_deltas_table = Table(
    "chat_message_count_deltas",
    Base.metadata,
    Column("tenant_id", String(128), nullable=False),
    Column("session_id", String(255), nullable=False),
    Column("n", BigInteger, nullable=False),
    *_change_columns(),
    Column("message_id", BigInteger),
    Column("role", String(32)),
    Column("created_at", DateTime(timezone=True)),
    Index("ix_chat_message_count_deltas_session", "tenant_id", "session_id"),
)

# The watch's history: every change the folder moved, at its position (server.data.counters).
# A session change carries the session's state before (`existed`, old status and channel: what
# filters need to tell "stopped matching") and after (or its last state when removed).
session_changes_table = Table(
    "chat_session_changes",
    Base.metadata,
    Column("position", BigInteger, primary_key=True),
    Column("xid", BigInteger, nullable=False),
    Column("committed_at", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(128), nullable=False),  # '' on a TRUNCATE (every tenant)
    Column("session_id", String(255), nullable=False),
    Column("kind", CHAR(1), nullable=False),  # A added, U updated, R removed, M message, T reset
    Column("existed", Boolean, nullable=False),
    Column("old_status", Text),
    Column("old_channel_type", String(255)),
    Column("exists", Boolean, nullable=False),
    Column("status", Text),
    Column("channel_type", String(255)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("metadata", JSONB(none_as_null=True)),
    Column("message_id", BigInteger),
    Column("message_role", String(32)),
    Column("message_created_at", DateTime(timezone=True)),
    Index("ix_chat_session_changes_session", "tenant_id", "session_id", "position"),
)

# One row: the log's epoch (tokens of a log made again are told apart), its last position, and
# the oldest position a watch may resume from (raised by pruning and by a TRUNCATE).
change_log_state_table = Table(
    "chat_change_log_state",
    Base.metadata,
    Column("only", Boolean, primary_key=True, server_default=text("true")),
    Column("epoch", BigInteger, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    Column("oldest_resumable", BigInteger, nullable=False),
)


sessions_table = cast(Table, ChatSession.__table__)
_newest_first = (sessions_table.c.created_at.desc(), sessions_table.c.session_id.desc())
# Newest-first listing with a unique tie-break (keyset pagination).
Index("ix_chat_sessions_tenant_created", sessions_table.c.tenant_id, *_newest_first)
# The status filter, on the very expression the queries use (unset = active).
Index(
    "ix_chat_sessions_tenant_status_created",
    sessions_table.c.tenant_id,
    displayed_status(sessions_table.c.metadata),
    *_newest_first,
)
Index(
    "ix_chat_sessions_tenant_channel_created",
    sessions_table.c.tenant_id,
    sessions_table.c.channel_type,
    *_newest_first,
)
messages_table = cast(Table, ChatMessage.__table__)
