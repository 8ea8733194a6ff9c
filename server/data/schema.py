"""The schema other services share with us: `chat_sessions` and `chat_messages`.

Names and meanings are a contract with the services that write these tables. Every primary,
unique and foreign key leads with tenant_id so the tables can be distributed by tenant
(Citus `create_distributed_table(..., 'tenant_id')`) without change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
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

# The status a session displays: stored metadata `status`, or `active` when there is none. The
# list filter and its index must use this exact expression for the index to apply.
EFFECTIVE_STATUS_SQL = "COALESCE(metadata ->> 'status', 'active')"
# The UTC day a session counts under in the per-day counters (with its effective status and
# channel); server.domain.counting plans whole days of the same calendar.
COUNTER_DAY_SQL = "(created_at AT TIME ZONE 'UTC')::date"
# The stored `endTime` when it is a JSON string (anything else is no end time).
END_TIME_TEXT_SQL = (
    "CASE WHEN jsonb_typeof(metadata -> 'endTime') = 'string' THEN metadata ->> 'endTime' END"
)
# Whether a status can be merged into the metadata without overwriting it: an object, or null
# (SQL or JSON), which counts as {}.
ACCEPTS_STATUS_SQL = "(metadata IS NULL OR jsonb_typeof(metadata) IN ('object', 'null'))"


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

    __table_args__ = (
        # Newest-first listing with a unique tie-break (keyset pagination).
        Index(
            "ix_chat_sessions_tenant_created",
            "tenant_id",
            text("created_at DESC"),
            text("session_id DESC"),
        ),
        # The status filter, on the same expression the queries use (unset = active).
        Index(
            "ix_chat_sessions_tenant_status_created",
            "tenant_id",
            text(f"({EFFECTIVE_STATUS_SQL})"),
            text("created_at DESC"),
            text("session_id DESC"),
        ),
        Index(
            "ix_chat_sessions_tenant_channel_created",
            "tenant_id",
            "channel_type",
            text("created_at DESC"),
            text("session_id DESC"),
        ),
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

# Changes to session_counts not folded yet, appended by the writers' triggers. No key and no
# index: an insert never waits for another writer and costs the least; the folder keeps the
# table small enough to read whole.
session_count_deltas_table = Table("chat_session_count_deltas", Base.metadata, *_bucket_columns())


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
    Index("ix_chat_message_count_deltas_session", "tenant_id", "session_id"),
)


sessions_table = cast(Table, ChatSession.__table__)
messages_table = cast(Table, ChatMessage.__table__)
