"""Hot-path execution: SQLAlchemy Core statements compiled once for asyncpg, run as asyncpg
prepared statements on connections of an asyncpg pool.

Measured per call (BENCHMARKS.md), SQLAlchemy's execution layer cost more CPU than PostgreSQL
spent answering, and even its pool's checkout and return (greenlet hops, events, reset) cost
~0.15 ms of a ~1 ms call inside the gRPC server. So statements are still built with SQLAlchemy
Core, but compiled to asyncpg's `$n` form once per shape and executed on an asyncpg pool, which
keeps the same duties: a bounded size, an acquire timeout, a fresh connection in place of a
broken one, and the JSON codecs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from server.db.engine import asyncpg_dsn, is_unavailable, loads_json, server_settings

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


class PoolExhaustedError(Exception):
    """Raised when no pooled connection frees up within the pool timeout."""


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


async def _set_codecs(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=loads_json, schema="pg_catalog"
        )


async def _reset(connection: asyncpg.Connection) -> None:
    """Make a released connection reusable without a round trip.

    asyncpg's default reset sends `RESET ALL; UNLISTEN *; ...` on every release, a round trip per
    call for session state this service never sets. A transaction left open (only possible after
    an error) is rolled back; a cancelled or broken connection never gets here (it is closed).
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class Database:
    """A pool of asyncpg connections to one PostgreSQL, and the statements run on them.

    Nothing connects until `open()`; connections are made on demand up to `pool_size`, so a
    server can start (and report NOT_SERVING) while its database is down.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        pool_timeout: float,
        connect_timeout: float,
        statement_timeout: float | None = None,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self.pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._server_settings = server_settings(statement_timeout)
        self._pool: asyncpg.Pool | None = None
        # Waiting for a free connection is bounded here rather than by asyncpg's acquire timeout,
        # which also covers connecting: a refused or slow connect must read as "unavailable",
        # and only a full pool as "busy".
        self._slots = asyncio.Semaphore(pool_size)
        self._in_use = 0
        self.observers: list[StatementObserver] = []

    async def open(self) -> None:
        """Create the pool (no connection is made yet)."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self.pool_size,
                timeout=self._connect_timeout,
                server_settings=self._server_settings,
                init=_set_codecs,
                reset=_reset,
            )

    async def close(self) -> None:
        """Close every connection (in-flight calls should have finished)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def in_use(self) -> int:
        """Connections checked out right now."""
        return self._in_use

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. One whose call was cancelled (deadline, client gone) or that
        failed at the connection level is closed rather than reused in an unknown state."""
        if self._pool is None:
            raise RuntimeError("Database.open() was not awaited")
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhaustedError() from None
        self._in_use += 1
        try:
            connection = await self._pool.acquire()
            try:
                yield connection
            except (asyncio.CancelledError, TimeoutError):
                connection.terminate()
                raise
            except Exception as error:
                if is_unavailable(error):
                    connection.terminate()
                raise
            finally:
                await self._pool.release(connection)
        finally:
            self._in_use -= 1
            self._slots.release()

    async def ping(self) -> None:
        """One round trip on a pooled connection; raises when the database does not answer."""
        async with self._connection() as connection:
            await connection.fetchval("SELECT 1")

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
