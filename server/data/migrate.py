"""Apply the Alembic migrations that ship inside this package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# NULLS NOT DISTINCT (migration 0002) and exact EXTRACT(EPOCH) (the sort keys) need 15.
MINIMUM_SERVER_VERSION = 150000


class UnsupportedServerError(RuntimeError):
    """Raised when the database server is older than PostgreSQL 15."""


def check_server_version(server_version_num: int) -> None:
    """Refuse a server older than MINIMUM_SERVER_VERSION (`SHOW server_version_num`)."""
    if server_version_num < MINIMUM_SERVER_VERSION:
        major, minor = divmod(server_version_num, 10000)
        raise UnsupportedServerError(
            f"PostgreSQL 15 or newer is required; this server is {major}.{minor}"
        )


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url`, needing no alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-backed: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Migrate the database at `database_url` to the newest schema (blocking; no event loop)."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to(database_url: str, revision: str) -> None:
    """Migrate the database at `database_url` back to `revision` (blocking; no event loop)."""
    command.downgrade(alembic_config(database_url), revision)


def upgrade_to(database_url: str, revision: str) -> None:
    """Migrate the database at `database_url` up to `revision` (blocking; no event loop)."""
    command.upgrade(alembic_config(database_url), revision)
