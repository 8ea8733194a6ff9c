"""The raw-SQL limit: capture the statements one RPC issues, then replay them with plain asyncpg.

Capture runs the servicer in-process on an `ObservedDatabase` (the server's Database with an
observer hook, which serving does without), recording each statement (SQL with `$n`
placeholders and its arguments) as a `server.data.statements.StatementObserver`. Replay sends
the same statements with asyncpg, each on its own, as the service does (it opens no
transactions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from server.data.engine import asyncpg_dsn
from server.data.statements import ObservedDatabase
from server.tools.bench.h2load import percentile


@dataclass(slots=True)
class CapturedCall:
    """The statements one RPC sent to PostgreSQL, in order, with their arguments."""

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Capture:
    """Records the SQL a database runs while `record` is running (a StatementObserver)."""

    def __init__(self, database: ObservedDatabase) -> None:
        self.current: CapturedCall | None = None
        database.observers.append(self)

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """Note a statement."""
        if self.current is not None:
            self.current.statements.append((sql, tuple(arguments)))

    async def record(self, call: Callable[[], Awaitable[Any]]) -> CapturedCall:
        """Run `call` and return the SQL it issued."""
        self.current = CapturedCall()
        try:
            await call()
            return self.current
        finally:
            self.current = None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Calls replayed per second and their latency percentiles (ms)."""

    calls: int
    calls_per_second: float
    p50_ms: float
    p99_ms: float


async def _replay_once(conn: asyncpg.Connection, call: CapturedCall) -> None:
    for statement, parameters in call.statements:
        await conn.fetch(statement, *parameters)


async def replay(
    pool: asyncpg.Pool,
    call: CapturedCall,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.3,
) -> ReplayResult:
    """Replay `call` from `concurrency` workers, each on its own connection, for
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
                await _replay_once(conn, call)
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
    pool = await asyncpg.create_pool(asyncpg_dsn(sqlalchemy_url), min_size=size, max_size=size)
    assert pool is not None
    return pool


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return repr(value.isoformat())
    return repr(value)


def describe(call: CapturedCall) -> Sequence[str]:
    """The statements as SQL text, each on one line followed by its parameters as a comment."""
    return [line for statement in call.statements for line in _statement_lines(*statement)]


def _statement_lines(statement: str, parameters: tuple[Any, ...]) -> list[str]:
    lines = [" ".join(statement.split()) + ";"]
    if parameters:
        values = ", ".join(f"${i}={_literal(value)}" for i, value in enumerate(parameters, start=1))
        lines.append(f"-- {values}")
    return lines
