"""Hot-path execution: SQLAlchemy Core statements compiled once for asyncpg, run as asyncpg
prepared statements on a small stack of asyncpg connections.

Hand-written because SQLAlchemy's execution layer and pool, and asyncpg's own pool, each cost
more CPU per call than PostgreSQL spent answering (BENCHMARKS.md, "Decisions"). Kept here: a
bounded number of connections, a bounded wait for one, a fresh connection in place of a closed
or broken one, and the JSON codecs. Every statement runs on its own (autocommit), so a
connection goes back as it came, with no reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncpg
from opentelemetry.trace import SpanKind, Tracer, get_current_span
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from server.data.engine import asyncpg_dsn, is_unavailable, loads_json, server_settings

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
    """Sees every statement an ObservedDatabase runs (tests check tenant scoping; the benchmark
    captures statements to replay)."""

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """A statement is about to run."""


async def _set_codecs(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=loads_json, schema="pg_catalog"
        )


class Database:
    """A bounded set of asyncpg connections to one PostgreSQL, and the statements run on them.

    Nothing connects until a statement needs a connection; connections are made on demand up to
    `pool_size` and reused newest first, so a server can start (and report NOT_SERVING) while
    its database is down.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        pool_timeout: float,
        connect_timeout: float,
        statement_timeout: float | None = None,
        role: str | None = None,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self.pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._server_settings = server_settings(statement_timeout, role=role)
        self._open = False
        self._idle: list[asyncpg.Connection] = []
        # Waiting for a connection slot is bounded by the pool timeout, connecting by the connect
        # timeout: a refused or slow connect must read as "unavailable", only a full pool as
        # "busy".
        self._slots = asyncio.Semaphore(pool_size)
        self._in_use = 0

    async def open(self) -> None:
        """Accept statements (no connection is made yet)."""
        self._open = True

    async def close(self) -> None:
        """Close the idle connections; one still in use is closed when its statement ends."""
        self._open = False
        idle, self._idle = self._idle, []
        await asyncio.gather(
            *(connection.close(timeout=self._connect_timeout) for connection in idle),
            return_exceptions=True,
        )

    @property
    def in_use(self) -> int:
        """Connections running a statement right now."""
        return self._in_use

    async def ping(self) -> None:
        """One round trip; raises when the database does not answer."""
        await self.fetch(_PING, {})

    async def fetch(self, statement: Compiled, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """All rows of one statement, run on its own (one statement sees one snapshot).

        A connection whose statement was cancelled (deadline, client gone) or failed at the
        connection level is closed rather than reused in an unknown state.
        """
        if not self._open:
            raise RuntimeError("Database.open() was not awaited")
        await self._take_slot()
        self._in_use += 1
        try:
            connection = await self._checkout()
            arguments = statement.arguments(values)
            try:
                rows: list[asyncpg.Record] = await connection.fetch(statement.sql, *arguments)
            except (asyncio.CancelledError, TimeoutError):
                connection.terminate()
                raise
            except Exception as error:
                if is_unavailable(error):
                    connection.terminate()
                    self._drop_idle()
                else:
                    self._checkin(connection)
                raise
            self._checkin(connection)
            return rows
        finally:
            self._in_use -= 1
            self._slots.release()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection for a few statements that must share it (a transaction); it is
        closed rather than reused when the block fails or is cancelled."""
        if not self._open:
            raise RuntimeError("Database.open() was not awaited")
        await self._take_slot()
        self._in_use += 1
        try:
            connection = await self._checkout()
            try:
                yield connection
            except BaseException:
                connection.terminate()
                raise
            self._checkin(connection)
        finally:
            self._in_use -= 1
            self._slots.release()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once: no timer needed
            return
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhaustedError() from None

    async def _checkout(self) -> asyncpg.Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():  # the server may have closed it while it sat idle
                return connection
        connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, server_settings=self._server_settings
        )
        try:
            await _set_codecs(connection)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _checkin(self, connection: asyncpg.Connection) -> None:
        if self._open and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append(connection)
        else:
            connection.terminate()

    def _drop_idle(self) -> None:
        """After a connection-level failure the idle connections most likely failed too (the
        server restarted, the network dropped): drop them so the next calls reconnect."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.terminate()


class ObservedDatabase(Database):
    """A Database that shows each statement to its observers before running it, for tests and
    the benchmark's capture. Serving uses Database itself, whose calls carry no observer hook."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.observers: list[StatementObserver] = []

    async def fetch(self, statement: Compiled, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """Show the statement and its arguments to every observer, then run it."""
        arguments = statement.arguments(values)
        for observer in self.observers:
            observer.statement(statement.sql, arguments)
        return await super().fetch(statement, values)


class TracedDatabase(Database):
    """A Database whose statements are spans, children of the call's span, when tracing is on
    (server.tracing). The statement's text is recorded, never its values."""

    def __init__(self, url: str, *, tracer: Tracer, **options: Any) -> None:
        super().__init__(url, **options)
        self._tracer = tracer

    async def fetch(self, statement: Compiled, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """Run the statement inside a client span of the current call's (health probes run
        outside any call: no orphan spans for them)."""
        if not get_current_span().get_span_context().is_valid:
            return await super().fetch(statement, values)
        with self._tracer.start_as_current_span(
            "postgresql " + statement.sql.split(None, 1)[0].upper(),
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement.sql},
        ):
            return await super().fetch(statement, values)


_PING = Compiled("SELECT 1", (), {})
