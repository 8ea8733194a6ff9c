"""A small, fixed demo dataset so the first grpcurl call against `make run` shows something
real: tenant `demo`, an online shoe shop's support bot (24 sessions: questions answered from
matching help-center articles, order lookups, one failed lookup with an error, one long
conversation), and tenant `acme` to show isolation. `python -m server.tools seed-demo`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
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


# The help-center articles the bot retrieves from; each answer below quotes one of them.
_KNOWLEDGE_BASE = {
    "refunds#2": "Refunds go back to the original payment method within 5 business days of the "
    "returned item reaching our warehouse.",
    "shipping#1": "Orders ship within 24 hours; a tracking link is emailed when the parcel "
    "leaves the warehouse.",
    "addresses#1": "A delivery address can be changed until the order ships, from Orders > "
    "Change address.",
    "returns#3": "Returns are free within 30 days: print the prepaid label from Orders > Return.",
    "sizes#1": "Our shoes run half a size small; the size chart lists foot length in cm.",
}


@dataclass(frozen=True)
class _Turn:
    """One question, its answer, the article the answer rests on, and the order looked up."""

    question: str
    answer: str
    article: str
    lookup: bool = False  # the bot calls lookup_order first


_TOPICS: tuple[tuple[_Turn, ...], ...] = (
    (
        _Turn(
            "How long does a refund take?",
            "Within 5 business days of the return reaching us, back to the card you paid with.",
            "refunds#2",
        ),
        _Turn(
            "Do I need to do anything?",
            "No: once the parcel is scanned at our warehouse the refund starts by itself.",
            "refunds#2",
        ),
    ),
    (
        _Turn(
            "Where is my order {order}?",
            "Order {order} shipped with DHL and should arrive "
            "tomorrow; the tracking link is in your email.",
            "shipping#1",
            lookup=True,
        ),
        _Turn(
            "Thanks! Can I still add an item?",
            "Not to a shipped order, but a new order ships within 24 hours.",
            "shipping#1",
        ),
    ),
    (
        _Turn(
            "Can I change the delivery address of {order}?",
            "Yes, it has not shipped yet: use Orders > Change address.",
            "addresses#1",
            lookup=True,
        ),
    ),
    (
        _Turn(
            "How do I return these shoes?",
            "Returns are free for 30 days: print the prepaid label from Orders > Return.",
            "returns#3",
        ),
        _Turn(
            "They were too small. What size should I order?",
            "Our shoes run half a size "
            "small, so take half a size up; the size chart has foot lengths.",
            "sizes#1",
        ),
    ),
)
# demo-session-004: the order service fails, so its trace holds all three kinds of entries.
_FAILED_LOOKUP_SESSION = 3
# demo-session-010: a long conversation (a size exchange, back and forth).
_LONG_SESSION, _LONG_TURNS = 9, 30


def _retrieval(article: str, score: float) -> list[dict[str, Any]]:
    return [
        {
            "source": "help-center",
            "document_id": article.split("#")[0],
            "chunk_id": article,
            "score": round(score, 2),
            "content": _KNOWLEDGE_BASE[article],
        }
    ]


def _lookup(session: int, order: str, *, failed: bool) -> dict[str, Any]:
    return {
        "id": f"call-{session + 1:03d}-1",
        "name": "lookup_order",
        "arguments": {"order_id": order},
        "result": None if failed else {"state": "shipped", "carrier": "DHL"},
        "status": "error" if failed else "ok",
        "latency_ms": 3000 if failed else 120 + session,
        "error": "order service timed out after 3000 ms" if failed else None,
    }


def _conversation(index: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(role, content, metadata) of a session's messages, in order."""
    order = f"A-{1000 + index}"
    if index == _FAILED_LOOKUP_SESSION:
        return [
            ("user", f"Where is my order {order}?", None),
            (
                "assistant",
                "I could not reach our order system just now. Orders ship within 24 hours and "
                "the tracking link is emailed when yours leaves the warehouse.",
                {
                    "retrieval": _retrieval("shipping#1", 0.88),
                    "tool_calls": [_lookup(index, order, failed=True)],
                    "error": {
                        "code": "ORDER_SERVICE_UNAVAILABLE",
                        "message": "lookup_order failed; answered from the help center",
                    },
                },
            ),
        ]
    turns = _TOPICS[index % len(_TOPICS)]
    if index == _LONG_SESSION:
        turns = tuple(turns[turn % len(turns)] for turn in range(_LONG_TURNS))
    messages: list[tuple[str, str, dict[str, Any] | None]] = []
    for number, turn in enumerate(turns):
        metadata: dict[str, Any] = {"retrieval": _retrieval(turn.article, 0.93 - number * 0.01)}
        if turn.lookup:
            metadata["tool_calls"] = [_lookup(index, order, failed=False)]
        messages.append(("user", turn.question.format(order=order), None))
        messages.append(("assistant", turn.answer.format(order=order), metadata))
    return messages


def _rows(tenant_id: str, sessions: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    session_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    for index in range(sessions):
        created = _NOW - timedelta(hours=7 * index)
        session_id = f"{tenant_id}-session-{index + 1:03d}"
        session_rows.append(
            {
                "tenant_id": tenant_id,
                "session_id": session_id,
                "channel_type": _CHANNELS[index % len(_CHANNELS)],
                "metadata_": _session_metadata(index, created),
                "created_at": created,
                "updated_at": created + timedelta(minutes=10),
            }
        )
        for number, (role, content, metadata) in enumerate(_conversation(index)):
            message_rows.append(
                {
                    "tenant_id": tenant_id,
                    "session_id": session_id,
                    "role": role,
                    "content": content,
                    "metadata_": metadata,
                    "created_at": created + timedelta(seconds=20 * number),
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
