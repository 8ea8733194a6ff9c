"""Connection settings shared by every connection we open, the SQLAlchemy async engine (demo
data, tools and tests; the serving path runs on `server.data.statements.Database`), and how to
tell "database unreachable" from other failures."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

APPLICATION_NAME = "sessionmonitoring"
# SQLSTATE classes meaning the server is gone or refusing us: connection exceptions (08) and
# operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def create_engine(
    database_url: str,
    *,
    pool_size: int,
    pool_timeout: float,
    connect_timeout: float,
) -> AsyncEngine:
    """An asyncpg-backed SQLAlchemy engine with a bounded pool."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # A pooled connection whose server went away is detected on use and discarded, so the
        # next call after an outage reconnects instead of failing again.
        pool_pre_ping=False,
        json_deserializer=loads_json,
        # Parameters can carry request text; keep it out of error messages and logs.
        hide_parameters=True,
        connect_args={
            "timeout": connect_timeout,
            "server_settings": server_settings(),
        },
    )


def server_settings(
    statement_timeout: float | None = None, *, role: str | None = None
) -> dict[str, str]:
    """Session settings every connection of ours starts with; `role` names a background
    connection in pg_stat_activity's application_name (`sessionmonitoring/folder`, ...).

    `statement_timeout` is PostgreSQL's own backstop: a statement that outlives every call
    deadline is cancelled by the server even if the client side never gets to cancel it.
    """
    settings = {
        "application_name": APPLICATION_NAME if role is None else f"{APPLICATION_NAME}/{role}",
        # When a call's deadline passes, its connection is discarded mid-query; asyncpg's cancel
        # request can lose that race, and a backend waiting on a lock would wait on. This makes
        # PostgreSQL (14+; we require 15+) notice the closed socket within half a second and
        # abort the query.
        "client_connection_check_interval": "500",
    }
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout * 1000) + 1000)
    return settings


def asyncpg_dsn(url: str) -> str:
    """A plain libpq/asyncpg DSN for a SQLAlchemy URL (`postgresql+asyncpg://...`), keeping the
    `?host=/socket/dir` form the embedded server uses."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def loads_json(text: str) -> Any:
    """Decode JSONB text; integers too long for Python's int parser come back as text.

    PostgreSQL accepts numbers of any length in JSONB, while `json.loads` refuses integers past
    4,300 digits; one such value written by another service must not break every read.
    """
    try:
        return json.loads(text)  # the C decoder; the fallback below is only for giant integers
    except ValueError:
        return json.loads(text, parse_int=_parse_int)


def _parse_int(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:
        return digits


_CONFLICT_SQLSTATES = ("40001", "40P01", "55P03")  # serialization, deadlock, lock not available


def is_retryable_conflict(error: BaseException) -> bool:
    """Whether `error` is a transaction conflict that the same statement may pass on retry."""
    seen: BaseException | None = error
    while seen is not None:
        if getattr(seen, "sqlstate", None) in _CONFLICT_SQLSTATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` (or anything it wraps) means PostgreSQL cannot be reached right now."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            return True
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
