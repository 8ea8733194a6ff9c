"""Arrange rows directly in PostgreSQL, the way the services that own the tables write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.schema import messages_table, sessions_table

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def tenant_metadata(tenant_id: str) -> list[tuple[str, str]]:
    """Call metadata naming `tenant_id`."""
    return [("x-tenant-id", tenant_id)]


class Factory:
    """Inserts chat sessions and messages and reads raw rows back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def session(
        self,
        tenant_id: str,
        session_id: str,
        *,
        created_at: datetime = BASE_TIME,
        metadata: Any = None,
        channel_type: str | None = "web",
    ) -> None:
        """Insert one session."""
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(sessions_table).values(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    created_at=created_at,
                    updated_at=created_at,
                    metadata=metadata,
                    channel_type=channel_type,
                )
            )

    async def sessions(
        self,
        tenant_id: str,
        count: int,
        *,
        start: datetime = BASE_TIME,
        step: timedelta = timedelta(minutes=1),
        **fields: Any,
    ) -> list[str]:
        """Insert `count` sessions `step` apart; return their ids, newest first."""
        rows = [
            {
                "tenant_id": tenant_id,
                "session_id": f"s-{index:05d}",
                "created_at": start + step * index,
                "updated_at": start + step * index,
                "metadata": fields.get("metadata"),
                "channel_type": fields.get("channel_type", "web"),
            }
            for index in range(count)
        ]
        async with self._engine.begin() as conn:
            await conn.execute(insert(sessions_table), rows)
        return [row["session_id"] for row in reversed(rows)]

    async def message(
        self,
        tenant_id: str,
        session_id: str,
        *,
        role: str | None = "user",
        content: str | None = "hello",
        metadata: Any = None,
        created_at: datetime = BASE_TIME,
    ) -> int:
        """Insert one message; return its id."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(messages_table)
                .values(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    role=role,
                    content=content,
                    metadata=metadata,
                    created_at=created_at,
                )
                .returning(messages_table.c.id)
            )
            return int(result.scalar_one())

    async def raw_metadata_sql(self, tenant_id: str, session_id: str, json_text: str) -> None:
        """Overwrite a session's metadata with arbitrary JSON text (odd shapes included)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE chat_sessions SET metadata = CAST(:value AS jsonb) "
                    "WHERE tenant_id = :tenant_id AND session_id = :session_id"
                ),
                {"value": json_text, "tenant_id": tenant_id, "session_id": session_id},
            )

    async def metadata(self, tenant_id: str, session_id: str) -> Any:
        """The session's stored metadata, as PostgreSQL holds it."""
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(sessions_table.c.metadata).where(
                    sessions_table.c.tenant_id == tenant_id,
                    sessions_table.c.session_id == session_id,
                )
            )
            return result.scalar_one()


def dumps(value: Any) -> str:
    """JSON text for `raw_metadata_sql`."""
    return json.dumps(value)
