"""Hot-path execution: SQLAlchemy Core statements compiled once for asyncpg, run as asyncpg
prepared statements on connections from the SQLAlchemy pool.

Measured per ListSessions call, SQLAlchemy's execution layer (greenlet hops, result processing,
transaction bookkeeping) cost more CPU than PostgreSQL spent answering (BENCHMARKS.md). So
statements are still built with SQLAlchemy Core, but compiled to asyncpg's `$n` form once per
shape, and executed directly. The SQLAlchemy pool still owns the connections: its size, acquire
timeout, invalidation on failure, and the engine's JSON codecs all keep applying.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from server.db.engine import is_unavailable

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as asyncpg runs it: SQL with `$n` placeholders and the parameter order."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for `values` (statement literals fill the rest)."""
        return [values[name] if name in values else self.defaults[name] for name in self.names]


def compile_statement(statement: ClauseElement) -> Compiled:
    """Compile a Core statement for asyncpg (do it once per statement shape, not per call)."""
    compiled = cast(SQLCompiler, statement.compile(dialect=_DIALECT))
    return Compiled(compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))


class StatementObserver(Protocol):
    """Sees every transaction and statement (tests check tenant scoping; the benchmark replays)."""

    def begin(self, *, isolation: str, readonly: bool) -> None:
        """A transaction starts."""

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """A statement runs in the current transaction."""

    def end(self, *, committed: bool) -> None:
        """The transaction ends."""


class Transaction:
    """One transaction on one pooled asyncpg connection."""

    def __init__(self, connection: asyncpg.Connection, observers: Sequence[StatementObserver]):
        self._connection = connection
        self._observers = observers

    async def fetch(self, statement: Compiled, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """All rows of `statement` with `values` bound."""
        return await _fetch(self._connection, self._observers, statement, values)


async def _fetch(
    connection: asyncpg.Connection,
    observers: Sequence[StatementObserver],
    statement: Compiled,
    values: Mapping[str, Any],
) -> list[asyncpg.Record]:
    arguments = statement.arguments(values)
    for observer in observers:
        observer.statement(statement.sql, arguments)
    rows: list[asyncpg.Record] = await connection.fetch(statement.sql, *arguments)
    return rows


class Database:
    """Runs transactions of compiled statements on the engine's pooled connections."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.observers: list[StatementObserver] = []

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. One whose call was cancelled (deadline, client gone) or that
        failed at the connection level is discarded rather than reused in an unknown state."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            try:
                yield raw.driver_connection
            except (asyncio.CancelledError, TimeoutError):
                await conn.invalidate()
                raise
            except Exception as error:
                if is_unavailable(error):
                    await conn.invalidate()
                raise

    async def fetch(self, statement: Compiled, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """All rows of one statement, run on its own (one statement sees one snapshot)."""
        async with self._connection() as connection:
            return await _fetch(connection, self.observers, statement, values)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str = "read_committed", readonly: bool = False
    ) -> AsyncIterator[Transaction]:
        """A transaction: committed when the block ends normally, rolled back otherwise."""
        async with self._connection() as connection:
            for observer in self.observers:
                observer.begin(isolation=isolation, readonly=readonly)
            committed = False
            try:
                async with connection.transaction(isolation=isolation, readonly=readonly):
                    yield Transaction(connection, self.observers)
                committed = True
            finally:
                for observer in self.observers:
                    observer.end(committed=committed)
