"""The raw-SQL limit: capture the statements one RPC issues, then replay them with plain asyncpg.

Capture runs the servicer in-process on an engine built like the server's, with a SQLAlchemy
`before_cursor_execute` listener recording each (statement, parameters) and `begin`/`commit`
listeners recording the transaction around them. SQLAlchemy's asyncpg dialect already renders
`$n` placeholders, so the statements go to asyncpg unchanged. Replay wraps them in the same
transaction (BEGIN with the same isolation level and read-only flag; COMMIT when the service
committed, else ROLLBACK as SQLAlchemy does when a connection returns to the pool).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from server.bench.h2load import percentile


@dataclass(slots=True)
class Transaction:
    """What one RPC sent to PostgreSQL."""

    isolation: str | None = None  # asyncpg's spelling, e.g. "repeatable_read"; None = default
    readonly: bool = False
    commit: bool = False
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Capture:
    """Records the SQL an engine sends while `recording` is set."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.current: Transaction | None = None
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "begin", self._on_begin)
        event.listen(sync_engine, "commit", self._on_commit)
        event.listen(sync_engine, "before_cursor_execute", self._on_execute)

    def _on_begin(self, conn: Connection) -> None:
        if self.current is None:
            return
        options = conn.get_execution_options()
        level = options.get("isolation_level")
        self.current.isolation = None if level is None else str(level).lower().replace(" ", "_")
        self.current.readonly = bool(options.get("postgresql_readonly", False))

    def _on_commit(self, conn: Connection) -> None:
        if self.current is not None:
            self.current.commit = True

    def _on_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if self.current is not None:
            self.current.statements.append((statement, tuple(parameters or ())))

    async def record(self, call: Callable[[], Awaitable[Any]]) -> Transaction:
        """Run `call` and return the SQL it issued."""
        self.current = Transaction()
        try:
            await call()
            return self.current
        finally:
            self.current = None


def asyncpg_dsn(sqlalchemy_url: str) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a postgresql+asyncpg SQLAlchemy URL."""
    url = make_url(sqlalchemy_url)
    query = dict(url.query)
    kwargs: dict[str, Any] = {
        "user": url.username,
        "password": url.password,
        "database": url.database,
        "host": query.get("host", url.host),
        "port": int(str(query.get("port", url.port or 5432))),
    }
    return {key: value for key, value in kwargs.items() if value is not None}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Calls replayed per second and their latency percentiles (ms)."""

    calls: int
    calls_per_second: float
    p50_ms: float
    p99_ms: float


async def _replay_once(conn: asyncpg.Connection, transaction: Transaction) -> None:
    tx = conn.transaction(isolation=transaction.isolation, readonly=transaction.readonly)
    await tx.start()
    try:
        for statement, parameters in transaction.statements:
            await conn.fetch(statement, *parameters)
    except BaseException:
        await tx.rollback()
        raise
    if transaction.commit:
        await tx.commit()
    else:
        await tx.rollback()


async def replay(
    pool: asyncpg.Pool,
    transaction: Transaction,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.3,
) -> ReplayResult:
    """Replay `transaction` from `concurrency` workers, each on its own connection, for
    `duration` seconds after a short warm-up."""
    latencies: list[float] = []
    measuring = False
    stop_at = 0.0

    async def worker() -> None:
        async with pool.acquire() as conn:
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                await _replay_once(conn, transaction)
                if measuring:
                    latencies.append((time.perf_counter() - started) * 1000)

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    measuring = True
    began = time.perf_counter()
    stop_at = began + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return ReplayResult(
        calls=len(latencies),
        calls_per_second=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )


async def open_pool(sqlalchemy_url: str, size: int) -> asyncpg.Pool:
    """A pool of exactly `size` connections, all opened up front."""
    pool = await asyncpg.create_pool(**asyncpg_dsn(sqlalchemy_url), min_size=size, max_size=size)
    assert pool is not None
    return pool


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return repr(value.isoformat())
    return repr(value)


def describe(transaction: Transaction) -> Sequence[str]:
    """The transaction as SQL text: BEGIN, each statement on one line followed by its
    parameters as a comment, and COMMIT or ROLLBACK."""
    begin = "BEGIN"
    if transaction.isolation:
        begin += " ISOLATION LEVEL " + transaction.isolation.replace("_", " ").upper()
    if transaction.readonly:
        begin += " READ ONLY"
    lines = [begin + ";"]
    for statement, parameters in transaction.statements:
        lines.append(" ".join(statement.split()) + ";")
        if parameters:
            values = ", ".join(
                f"${i}={_literal(value)}" for i, value in enumerate(parameters, start=1)
            )
            lines.append(f"-- {values}")
    lines.append("COMMIT;" if transaction.commit else "ROLLBACK;")
    return lines
