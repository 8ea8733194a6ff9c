"""Initial schema: chat_sessions and chat_messages, keyed by tenant, with listing indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EFFECTIVE_STATUS_SQL = "COALESCE(metadata ->> 'status', 'active')"


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("channel_type", sa.String(255)),
        sa.Column("metadata", JSONB()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", name="pk_chat_sessions"),
    )
    op.create_index(
        "ix_chat_sessions_tenant_created",
        "chat_sessions",
        ["tenant_id", sa.text("created_at DESC"), sa.text("session_id DESC")],
    )
    op.create_index(
        "ix_chat_sessions_tenant_status_created",
        "chat_sessions",
        [
            "tenant_id",
            sa.text(f"({EFFECTIVE_STATUS_SQL})"),
            sa.text("created_at DESC"),
            sa.text("session_id DESC"),
        ],
    )
    op.create_index(
        "ix_chat_sessions_tenant_channel_created",
        "chat_sessions",
        ["tenant_id", "channel_type", sa.text("created_at DESC"), sa.text("session_id DESC")],
    )
    op.create_table(
        "chat_messages",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32)),
        sa.Column("content", sa.Text),
        sa.Column("metadata", JSONB()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "session_id"],
            ["chat_sessions.tenant_id", "chat_sessions.session_id"],
            name="fk_chat_messages_tenant_id_session_id_chat_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_chat_messages_tenant_session_created",
        "chat_messages",
        ["tenant_id", "session_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_table("chat_messages")
    op.drop_table("chat_sessions")
