"""A small, fixed demo dataset (tenant `demo`, plus tenant `acme` to show isolation) so the first
grpcurl call against `make run` shows something: `python -m server.tools seed-demo`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.config import Settings
from server.data.engine import create_engine
from server.data.migrate import upgrade_to_head
from server.data.schema import messages_table, sessions_table
from server.domain.status import format_end_time

DEMO_TENANT = "demo"
_CHANNELS = ("web", "whatsapp", "email")
_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
logger = logging.getLogger(__name__)


def _session_metadata(index: int, created: datetime) -> dict[str, Any] | None:
    if index % 5 == 1:
        return {
            "status": "closed",
            "endTime": format_end_time(created + timedelta(minutes=9)),
            "csat": 4,
        }
    if index % 10 == 3:
        return {"status": "expired", "endTime": format_end_time(created + timedelta(hours=1))}
    if index % 3 == 0:
        return None  # written before statuses existed: displays as active
    return {"status": "active", "locale": "en-US"}


def _assistant_metadata(session: int, turn: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "retrieval": [
            {
                "source": "help-center",
                "document_id": f"kb-{100 + session}",
                "chunk_id": f"kb-{100 + session}#{turn}",
                "score": 0.91 - turn * 0.05,
                "content": "Refunds are issued to the original payment method within 5 days.",
            }
        ]
    }
    if turn == 1:
        metadata["tool_calls"] = [
            {
                "id": f"call-{session}-{turn}",
                "name": "lookup_order",
                "arguments": {"order_id": f"A-{1000 + session}"},
                "result": {"state": "shipped"} if session % 4 else None,
                "status": "ok" if session % 4 else "error",
                "latency_ms": 120 + session,
                "error": None if session % 4 else "order service timed out",
            }
        ]
    if session % 7 == 6 and turn == 2:
        metadata["error"] = {"code": "LLM_TIMEOUT", "message": "the model did not answer in 30s"}
    return metadata


def _rows(tenant_id: str, sessions: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    session_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    for index in range(sessions):
        created = _NOW - timedelta(hours=7 * index)
        session_id = f"{tenant_id}-session-{index + 1:03d}"
        metadata = _session_metadata(index, created)
        session_rows.append(
            {
                "tenant_id": tenant_id,
                "session_id": session_id,
                "channel_type": _CHANNELS[index % len(_CHANNELS)],
                "metadata_": metadata,
                "created_at": created,
                "updated_at": created + timedelta(minutes=10),
            }
        )
        for turn in range(3):
            at = created + timedelta(minutes=2 * turn)
            message_rows.append(
                {
                    "tenant_id": tenant_id,
                    "session_id": session_id,
                    "role": "user",
                    "content": f"Where is my order A-{1000 + index}? (turn {turn + 1})",
                    "metadata_": None,
                    "created_at": at,
                }
            )
            message_rows.append(
                {
                    "tenant_id": tenant_id,
                    "session_id": session_id,
                    "role": "assistant",
                    "content": "Your order has shipped and should arrive tomorrow.",
                    "metadata_": _assistant_metadata(index, turn),
                    "created_at": at + timedelta(seconds=5),
                }
            )
    return session_rows, message_rows


async def load_demo_data(conn: AsyncConnection) -> bool:
    """Insert the demo tenants when the database holds no sessions at all; True if it did."""
    existing = await conn.execute(select(func.count()).select_from(sessions_table))
    if existing.scalar_one() > 0:
        return False
    await insert_demo_data(conn)
    return True


async def insert_demo_data(conn: AsyncConnection) -> None:
    """Insert the demo tenants `demo` (24 sessions) and `acme` (3)."""
    for tenant_id, sessions in ((DEMO_TENANT, 24), ("acme", 3)):
        session_rows, message_rows = _rows(tenant_id, sessions)
        await conn.execute(insert(sessions_table), _keyed(session_rows))
        await conn.execute(insert(messages_table), _keyed(message_rows))


def _keyed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rename the ORM attribute `metadata_` to the column key `metadata` for Core inserts."""
    return [{("metadata" if k == "metadata_" else k): v for k, v in row.items()} for row in rows]


def seed_demo(settings: Settings) -> int:
    """`python -m server.tools seed-demo`: with no DATABASE_URL, migrate the embedded PostgreSQL
    and load the demo tenants when it holds no sessions; a given database is never touched."""
    from server.runner import database_url  # the server resolves its database the same way

    url, embedded = database_url(settings)
    if not embedded:
        logger.info("DATABASE_URL is set: no demo data loaded")
        return 0
    upgrade_to_head(url)
    asyncio.run(_load_demo(url))
    return 0


async def _load_demo(url: str) -> None:
    engine = create_engine(url, pool_size=1, pool_timeout=5, connect_timeout=5)
    try:
        async with engine.begin() as conn:
            if await load_demo_data(conn):
                logger.info("loaded demo data: try tenant %r", DEMO_TENANT)
    finally:
        await engine.dispose()
