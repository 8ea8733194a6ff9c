"""What each CLI command does: resolve the database (embedded or given), migrate, serve."""

from __future__ import annotations

import asyncio
import logging

from server import app
from server.config import Settings
from server.db.embedded import start_embedded_postgres
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.demo import DEMO_TENANT, load_demo_data

logger = logging.getLogger(__name__)


def _database_url(settings: Settings) -> tuple[str, bool]:
    """The database to use and whether it is the embedded one."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    logger.info("DATABASE_URL is not set: starting the embedded PostgreSQL")
    return start_embedded_postgres(settings.data_dir), True


def migrate(settings: Settings) -> int:
    """`python -m server migrate`: bring the schema to the newest migration."""
    url, _ = _database_url(settings)
    upgrade_to_head(url)
    logger.info("database schema is up to date")
    return 0


async def _load_demo(url: str) -> None:
    engine = create_engine(url, pool_size=1, pool_timeout=5, connect_timeout=5)
    try:
        async with engine.begin() as conn:
            if await load_demo_data(conn):
                logger.info("loaded demo data: try tenant %r", DEMO_TENANT)
    finally:
        await engine.dispose()


def serve(settings: Settings) -> int:
    """`python -m server [serve]`: serve until SIGTERM/SIGINT. The embedded database is migrated
    and seeded first; a given DATABASE_URL is used as is (run `migrate` for it)."""
    url, embedded = _database_url(settings)
    if embedded:
        upgrade_to_head(url)
        if settings.demo_data:
            asyncio.run(_load_demo(url))
    asyncio.run(app.serve(settings, url))
    return 0
