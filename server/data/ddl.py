"""DDL helpers for migrations that run next to other services' writers.

A DDL statement that needs a lock writers conflict with (CREATE TRIGGER takes SHARE ROW
EXCLUSIVE) queues behind any open writer transaction, and every writer that comes after queues
behind it: one writer holding a transaction open for minutes would stall them all. So such
statements wait at most a moment for their lock and are retried until they get it.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

LOCK_TIMEOUT_MS = 200
ATTEMPTS = 150
_LOCK_NOT_AVAILABLE = "55P03"


def current_schema(connection: Connection) -> str:
    """The schema the migrations create objects in, quoted for use in SQL text."""
    return str(connection.execute(text("SELECT quote_ident(current_schema())")).scalar_one())


def run_briefly_locked(connection: Connection, *statements: str, **values: object) -> None:
    """Run `statements` together, waiting at most LOCK_TIMEOUT_MS for each lock they take, and
    try again until they get them all (writers queue behind a waiting lock request, so it must
    never wait long). Commit soon after: the locks are held until then."""
    for attempt in range(ATTEMPTS):
        savepoint = connection.begin_nested()
        try:
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
            for statement in statements:
                connection.execute(text(statement), values)
            connection.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        except DBAPIError as error:
            savepoint.rollback()
            if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            time.sleep(min(0.05 * (attempt + 1), 1.0))
            continue
        savepoint.commit()
        return
    raise TimeoutError(f"no lock for {statements[0]!r} in {ATTEMPTS} tries: a writer holds it")


def backfill_by_tenant(table: str, statement: str) -> None:
    """Commit, then run `statement` once per tenant of `table` (bound as :tenant_id), each in
    its own short transaction: a backfill must not hold what it locks for a whole table's time.
    Each must be additive (exact whatever the triggers counted meanwhile), and it is retried
    when it would wait on a writer."""
    commit_now()
    connection = op.get_bind()
    # `table` is a migration's constant, never input.
    tenants = connection.execute(text(f"SELECT DISTINCT tenant_id FROM {table}")).scalars()  # noqa: S608
    for tenant_id in list(tenants):
        run_briefly_locked(connection, statement, tenant_id=tenant_id)
        commit_now()


def commit_now() -> None:
    """Commit the migration's work so far: locks taken up to here are released, and what
    follows runs in a new transaction."""
    with op.get_context().autocommit_block():
        pass


def revision_module(filename: str) -> ModuleType:
    """Another migration's module (their file names are not importable names), so a downgrade
    can restore exactly what that migration defined instead of keeping a copy of it."""
    path = Path(__file__).parent / "migrations" / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
