"""Counters that cost the writers no shared lock: triggers append deltas, the service folds them.

Before: every new session of a tenant, day, status and channel upserted the *same* counter row,
which stayed locked until the writer committed, so other services' inserts serialized per
tenant and one open writer transaction blocked every other writer of that bucket (and our own
status updates). Now row-level triggers only INSERT one or two delta rows into tables without
any key, so no writer ever waits on another;
`server.data.counters.fold` moves committed deltas into the counters in the background, and reads
add the not-yet-folded deltas to the counters in the same statement, so totals stay exact and in
the page's snapshot. Row-level rather than statement-level: writers insert a row or two per
statement, and there a transition table costs more than a row trigger (BENCHMARKS.md).

Deploying it takes no lock that writers wait on for more than a moment: each table's triggers
are swapped in one short transaction whose lock waits are capped and retried (server.data.ddl);
statements before the swap upserted the counters, statements after it append deltas on top.

The trigger functions run as their owner (SECURITY DEFINER), so writer roles need no grants on
our tables. They carry no `SET search_path`, which measurably taxed every writer's statement;
instead every name in them is schema-qualified, so no search_path can redirect them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from server.data.ddl import commit_now, current_schema, revision_module, run_briefly_locked

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def session_bucket(row: str) -> str:
    """Frozen copy of a session's counter bucket (server.data.schema.EFFECTIVE_STATUS_SQL and the
    UTC day) over the trigger row `row`; tests/integration/test_migrations.py proves it still
    equals the live rule."""
    return (
        f"{row}.tenant_id, CAST(pg_catalog.timezone('UTC', {row}.created_at) AS pg_catalog.date), "
        f"COALESCE({row}.metadata OPERATOR(pg_catalog.->>) 'status', 'active'), {row}.channel_type"
    )


def _message_key(row: str) -> str:
    return f"{row}.tenant_id, {row}.session_id"


# (chat table, the old counters' trigger prefix, the deltas table, its key columns, a row's key)
_TABLES = (
    (
        "chat_sessions",
        "chat_session_counts",
        "chat_session_count_deltas",
        "tenant_id, day, status, channel_type",
        session_bucket,
    ),
    (
        "chat_messages",
        "chat_session_message_counts",
        "chat_message_count_deltas",
        "tenant_id, session_id",
        _message_key,
    ),
)
_TRUNCATED = {
    "chat_sessions": ("chat_session_counts", "chat_session_count_deltas"),
    "chat_messages": ("chat_session_message_counts", "chat_message_count_deltas"),
}
_EVENTS = ("insert", "update", "delete")


def _function(name: str, body: str, *, replace: bool = False) -> None:
    op.execute(
        f"CREATE {'OR REPLACE ' if replace else ''}FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        f"AS $body$BEGIN {body}; RETURN NULL; END$body$"
    )


def _create_functions(schema: str, *, replace: bool = False) -> None:
    """One function per table and event: a row counts +1 under its key, -1 under its old one
    (`replace`: over the ones a later migration put in their place)."""
    for table, _old, deltas, columns, key in _TABLES:
        into = f"INSERT INTO {schema}.{deltas} ({columns}, n) VALUES"
        _function(f"{deltas}_on_insert", f"{into} ({key('NEW')}, 1)", replace=replace)
        _function(
            f"{deltas}_on_update", f"{into} ({key('OLD')}, -1), ({key('NEW')}, 1)", replace=replace
        )
        _function(f"{deltas}_on_delete", f"{into} ({key('OLD')}, -1)", replace=replace)
        # TRUNCATE (not DELETE) waits for a fold in flight and removes what it committed; the
        # writer holds ACCESS EXCLUSIVE on the chat table already, so no reader waits longer.
        counters, table_deltas = _TRUNCATED[table]
        _function(
            f"{table}_counts_on_truncate",
            f"TRUNCATE {schema}.{counters}, {schema}.{table_deltas}",
            replace=replace,
        )


def _new_triggers(table: str, deltas: str, key: Callable[[str], str]) -> tuple[str, ...]:
    moved = f"({key('OLD')}) IS DISTINCT FROM ({key('NEW')})"
    return (
        f"CREATE TRIGGER {table}_count_insert AFTER INSERT ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {deltas}_on_insert()",
        # Only updates that move a row to another key count; most updates (a status kept, a
        # content edit, updated_at) do not even call the function.
        f"CREATE TRIGGER {table}_count_update AFTER UPDATE ON {table} "
        f"FOR EACH ROW WHEN ({moved}) EXECUTE FUNCTION {deltas}_on_update()",
        f"CREATE TRIGGER {table}_count_delete AFTER DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {deltas}_on_delete()",
        f"CREATE TRIGGER {table}_count_truncate AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_counts_on_truncate()",
    )


def _old_triggers(table: str, old: str) -> tuple[str, ...]:
    """The statement triggers of migrations 0002 and 0003."""
    functions = {
        "chat_sessions": {
            "insert": "chat_session_counts_apply",
            "update": "chat_session_counts_apply_update",
            "delete": "chat_session_counts_apply",
        },
        "chat_messages": dict.fromkeys(_EVENTS, "chat_session_message_counts_apply"),
    }[table]
    transitions = {
        "insert": "NEW TABLE AS new_rows",
        "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "OLD TABLE AS old_rows",
    }
    return tuple(
        f"CREATE TRIGGER {old}_{event} AFTER {event.upper()} ON {table} "
        f"REFERENCING {transitions[event]} FOR EACH STATEMENT EXECUTE FUNCTION {functions[event]}()"
        for event in _EVENTS
    )


_OLD_FUNCTIONS = (
    "chat_session_counts_apply",
    "chat_session_counts_apply_update",
    "chat_session_message_counts_apply",
)
# No key: appending never waits for another writer. One index each, for the readers: a burst of
# deltas (a bulk delete) leaves a table physically large after its fold, and a read must cost
# what the tenant has unfolded, not what the table once held. Never truncated: truncating takes
# a lock writers would wait for; the folder vacuums them after each fold.
_VACUUM_OFTEN = {
    "autovacuum_vacuum_scale_factor": 0,
    "autovacuum_vacuum_threshold": 1000,
    "vacuum_truncate": "false",
}
_DELTA_INDEXES = (
    ("ix_chat_session_count_deltas_tenant", "chat_session_count_deltas", ["tenant_id", "day"]),
    (
        "ix_chat_message_count_deltas_session",
        "chat_message_count_deltas",
        ["tenant_id", "session_id"],
    ),
)


def upgrade() -> None:
    op.create_table(
        "chat_session_count_deltas",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("channel_type", sa.String(255)),
        sa.Column("n", sa.BigInteger, nullable=False),
        postgresql_with=_VACUUM_OFTEN,
    )
    op.create_table(
        "chat_message_count_deltas",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        postgresql_with=_VACUUM_OFTEN,
    )
    for name, table, columns in _DELTA_INDEXES:
        op.create_index(name, table, columns)
    _create_functions(current_schema(op.get_bind()))
    for table, old, deltas, _columns, key in _TABLES:
        # One short transaction per table: its old triggers go and the new ones come together.
        drops = tuple(f"DROP TRIGGER {old}_{event} ON {table}" for event in _EVENTS)
        run_briefly_locked(op.get_bind(), *drops, *_new_triggers(table, deltas, key))
        commit_now()
    # Only the folder writes the counters now, so these wait on no writer.
    for counters, columns in (
        ("chat_session_counts", ["tenant_id", "day"]),
        ("chat_session_message_counts", ["tenant_id", "session_id"]),
    ):
        op.create_index(f"ix_{counters}_zero", counters, columns, postgresql_where=sa.text("n = 0"))
    for function in _OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}()")


def downgrade() -> None:
    # The upsert triggers are restored from the migrations that define them, not from a copy.
    op.execute(revision_module("0002_session_counts.py")._FUNCTION)
    op.execute(revision_module("0002_session_counts.py")._UPDATE_FUNCTION)
    op.execute(revision_module("0003_session_message_counts.py")._APPLY)
    # Before the swap, while writers do not touch the counters yet: DROP INDEX locks its table.
    for counters in ("chat_session_counts", "chat_session_message_counts"):
        run_briefly_locked(op.get_bind(), f"DROP INDEX ix_{counters}_zero")
    commit_now()
    for table, old, _deltas, _columns, _key in _TABLES:
        drops = tuple(
            f"DROP TRIGGER {table}_count_{event} ON {table}" for event in (*_EVENTS, "truncate")
        )
        run_briefly_locked(op.get_bind(), *drops, *_old_triggers(table, old))
        commit_now()
    # Writers that appended deltas before the swap hold their lock on the delta tables until
    # they commit; taking it waits for them, so no delta is left behind unfolded.
    op.execute("LOCK TABLE chat_session_count_deltas, chat_message_count_deltas IN EXCLUSIVE MODE")
    op.execute(
        """
        INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
        SELECT tenant_id, day, status, channel_type, sum(n) FROM chat_session_count_deltas
         GROUP BY 1, 2, 3, 4
        ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n
        """
    )
    op.execute(
        """
        INSERT INTO chat_session_message_counts AS c (tenant_id, session_id, n)
        SELECT tenant_id, session_id, sum(n) FROM chat_message_count_deltas GROUP BY 1, 2
        ON CONFLICT (tenant_id, session_id) DO UPDATE SET n = c.n + EXCLUDED.n
        """
    )
    op.drop_table("chat_message_count_deltas")
    op.drop_table("chat_session_count_deltas")
    for table, _old, deltas, _columns, _key in _TABLES:
        for function in (
            *(f"{deltas}_on_{event}" for event in _EVENTS),
            f"{table}_counts_on_truncate",
        ):
            op.execute(f"DROP FUNCTION {function}()")
