"""Alembic environment: runs migrations over an async engine built from the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from server.data.migrate import check_server_version
from server.data.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    version = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
    # End the transaction that query began: each migration must run in one of its own.
    connection.commit()
    check_server_version(version)
    # One transaction per migration: a migration that must release its locks early (see
    # server.data.ddl) commits only its own work, never that of the migrations before it.
    context.configure(
        connection=connection, target_metadata=target_metadata, transaction_per_migration=True
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
