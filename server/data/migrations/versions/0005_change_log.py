"""The change log behind WatchSessions, riding on the counters' deltas; TRUNCATE that cannot
deadlock with a fold.

The writers' triggers still append exactly one or two rows per changed row to the delta tables
of 0004 (no key, no lock anyone waits for); those rows now also say what changed: which
session or message, how (`op`: I insert, U update, D delete, T truncate), the state after (or,
for a delete, the last state), the writer's transaction id (`xid`) and a sequence number drawn
when the change was made (`seq`). A session update that moves no counter appends one row with
n = 0, so the watch sees every change while the counts stay as they were.

The folder (server.data.counters) moves them, in one statement, into the counters and into
`chat_session_changes`, where each change gets its `position`. Positions are assigned only by
the one folder holding the fold lock, in its own transactions, so a reader of `position > p`
can never skip a change that commits late: a change has no position until it is committed and
moved. Within one move, changes are ordered by transaction, each transaction by the last `seq`
it drew, so any two changes of one session (which wait for each other's row lock) keep their
commit order; see server.data.counters for the argument.

TRUNCATE of a chat table first takes the fold lock (waiting for a fold in flight), then
truncates its counters and deltas, and leaves a `T` row: the watch's history restarts there.
The folder takes that lock before it touches any table, so the two can no longer deadlock.

Deploying takes no long lock: new columns have no stored default (instant), functions are
replaced in place, and the one trigger that changes is swapped in a short, retried transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from server.data.ddl import commit_now, current_schema, revision_module, run_briefly_locked

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0004 = revision_module("0004_append_only_counters.py")
# pg_advisory_xact_lock key of the folder (server.data.counters.FOLD_LOCK_KEY), frozen here.
FOLD_LOCK_KEY = 0x736D636F756E7473
_SESSION_COLUMNS = (
    "tenant_id, day, status, channel_type, n, op, session_id, created_at, updated_at, metadata"
)
_MESSAGE_COLUMNS = "tenant_id, session_id, n, op, message_id, role, created_at"


def _session_row(row: str, n: str, op_: str) -> str:
    return (
        f"({_0004.session_bucket(row)}, {n}, {op_}, {row}.session_id, {row}.created_at, "
        f"{row}.updated_at, {row}.metadata)"
    )


def _message_row(row: str, n: str, op_: str) -> str:
    return (
        f"({row}.tenant_id, {row}.session_id, {n}, {op_}, {row}.id, {row}.role, {row}.created_at)"
    )


def _same_key(key: str) -> str:
    """Keys are NOT NULL; the operator is qualified so no search_path can redirect it."""
    return f"OLD.{key} OPERATOR(pg_catalog.=) NEW.{key}"


def _functions(schema: str) -> dict[str, str]:
    sessions = f"INSERT INTO {schema}.chat_session_count_deltas ({_SESSION_COLUMNS}) VALUES"
    messages = f"INSERT INTO {schema}.chat_message_count_deltas ({_MESSAGE_COLUMNS}) VALUES"
    # An update that changes a row's identity is, for the watch, a delete and an insert.
    session_moved = f"CASE WHEN {_same_key('tenant_id')} AND {_same_key('session_id')}"
    message_moved = f"CASE WHEN {_same_key('tenant_id')} AND {_same_key('id')}"
    reset = (
        f"INSERT INTO {schema}.chat_session_count_deltas (tenant_id, day, status, n, op, "
        f"session_id) VALUES ('', DATE '-infinity', '', 0, 'T', '')"
    )
    lock = f"PERFORM pg_catalog.pg_advisory_xact_lock({FOLD_LOCK_KEY})"
    insert, update, delete = "'I'", "'U'", "'D'"
    session_old_op = f"{session_moved} THEN 'U' ELSE 'D' END"
    session_new_op = f"{session_moved} THEN 'U' ELSE 'I' END"
    message_old_op = f"{message_moved} THEN 'U' ELSE 'D' END"
    message_new_op = f"{message_moved} THEN 'U' ELSE 'I' END"
    return {
        "chat_session_count_deltas_on_insert": f"{sessions} {_session_row('NEW', '1', insert)}",
        "chat_session_count_deltas_on_update": (
            f"{sessions} {_session_row('OLD', '-1', session_old_op)}, "
            f"{_session_row('NEW', '1', session_new_op)}"
        ),
        "chat_session_count_deltas_on_change": f"{sessions} {_session_row('NEW', '0', update)}",
        "chat_session_count_deltas_on_delete": f"{sessions} {_session_row('OLD', '-1', delete)}",
        "chat_message_count_deltas_on_insert": f"{messages} {_message_row('NEW', '1', insert)}",
        "chat_message_count_deltas_on_update": (
            f"{messages} {_message_row('OLD', '-1', message_old_op)}, "
            f"{_message_row('NEW', '1', message_new_op)}"
        ),
        "chat_message_count_deltas_on_delete": f"{messages} {_message_row('OLD', '-1', delete)}",
        "chat_sessions_counts_on_truncate": (
            f"{lock}; TRUNCATE {schema}.chat_session_counts, {schema}.chat_session_count_deltas; "
            f"{reset}"
        ),
        "chat_messages_counts_on_truncate": (
            f"{lock}; TRUNCATE {schema}.chat_session_message_counts, "
            f"{schema}.chat_message_count_deltas; {reset}"
        ),
    }


def _replace(name: str, body: str) -> None:
    op.execute(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        f"AS $body$BEGIN {body}; RETURN NULL; END$body$"
    )


_SESSION_KEY_MOVED = (
    f"({_0004.session_bucket('OLD')}, OLD.session_id) IS DISTINCT FROM "
    f"({_0004.session_bucket('NEW')}, NEW.session_id)"
)
# Every other real change of a session reaches the watch too, as one row that counts nothing.
_CHANGE_TRIGGER = (
    "CREATE TRIGGER chat_sessions_change_update AFTER UPDATE ON chat_sessions FOR EACH ROW "
    f"WHEN (NOT ({_SESSION_KEY_MOVED}) AND OLD.* IS DISTINCT FROM NEW.*) "
    "EXECUTE FUNCTION chat_session_count_deltas_on_change()"
)
# Moves now include a new session_id within the same bucket (0004's key had no session_id).
_MOVE_TRIGGER = (
    "CREATE TRIGGER chat_sessions_count_update AFTER UPDATE ON chat_sessions FOR EACH ROW "
    f"WHEN ({_SESSION_KEY_MOVED}) EXECUTE FUNCTION chat_session_count_deltas_on_update()"
)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE chat_change_seq AS bigint CACHE 1")  # CACHE 1: drawn in order
    for table, columns in (
        (
            "chat_session_count_deltas",
            "ADD COLUMN op char(1), ADD COLUMN session_id varchar(255), "
            "ADD COLUMN created_at timestamptz, ADD COLUMN updated_at timestamptz, "
            "ADD COLUMN metadata jsonb",
        ),
        (
            "chat_message_count_deltas",
            "ADD COLUMN op char(1), ADD COLUMN message_id bigint, ADD COLUMN role varchar(32), "
            "ADD COLUMN created_at timestamptz",
        ),
    ):
        # Added without a default (no rewrite), the defaults set after: rows already there keep
        # NULL, which the folder counts but does not log.
        run_briefly_locked(
            op.get_bind(),
            f"ALTER TABLE {table} {columns}, ADD COLUMN xid xid8, ADD COLUMN seq bigint",
            f"ALTER TABLE {table} ALTER COLUMN xid SET DEFAULT pg_current_xact_id(), "
            "ALTER COLUMN seq SET DEFAULT nextval('chat_change_seq')",
        )
        commit_now()
    op.create_table(
        "chat_session_changes",
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("xid", sa.BigInteger, nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.CHAR(1), nullable=False),
        sa.Column("existed", sa.Boolean, nullable=False),
        sa.Column("old_status", sa.Text),
        sa.Column("old_channel_type", sa.String(255)),
        sa.Column("exists", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text),
        sa.Column("channel_type", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("metadata", JSONB(none_as_null=True)),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("message_role", sa.String(32)),
        sa.Column("message_created_at", sa.DateTime(timezone=True)),
    )
    # A session's changes in order: what state a message's session was in, one session's watch.
    op.create_index(
        "ix_chat_session_changes_session",
        "chat_session_changes",
        ["tenant_id", "session_id", "position"],
    )
    op.create_table(
        "chat_change_log_state",
        sa.Column("only", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("oldest_resumable", sa.BigInteger, nullable=False),
        sa.CheckConstraint('"only"', name="one_row"),
    )
    # A random epoch: tokens from a log that was dropped and made again are told apart.
    op.execute(
        "INSERT INTO chat_change_log_state (epoch, last_position, oldest_resumable) "
        "VALUES (CAST(floor(random() * 9007199254740991) AS bigint), 0, 0)"
    )
    schema = current_schema(op.get_bind())
    for name, body in _functions(schema).items():
        _replace(name, body)
    run_briefly_locked(
        op.get_bind(),
        "DROP TRIGGER chat_sessions_count_update ON chat_sessions",
        _MOVE_TRIGGER,
        _CHANGE_TRIGGER,
    )
    commit_now()


def downgrade() -> None:
    # One short transaction: a writer's statement reads the trigger functions when it starts
    # and the delta tables' columns when its trigger runs, so the bodies and the columns must
    # change together, with no writer statement in flight (the lock waits for those).
    _0004._create_functions(current_schema(op.get_bind()), replace=True)
    drops = {
        "chat_session_count_deltas": "op, session_id, created_at, updated_at, metadata",
        "chat_message_count_deltas": "op, message_id, role, created_at",
    }
    run_briefly_locked(
        op.get_bind(),
        "LOCK TABLE chat_sessions, chat_messages IN SHARE ROW EXCLUSIVE MODE",
        "DROP TRIGGER chat_sessions_change_update ON chat_sessions",
        "DROP TRIGGER chat_sessions_count_update ON chat_sessions",
        _0004._new_triggers("chat_sessions", "chat_session_count_deltas", _0004.session_bucket)[1],
        *(
            f"ALTER TABLE {table} "
            + ", ".join(f"DROP COLUMN {name}" for name in (*columns.split(", "), "xid", "seq"))
            for table, columns in drops.items()
        ),
    )
    commit_now()
    op.execute("DROP FUNCTION chat_session_count_deltas_on_change()")
    op.drop_table("chat_change_log_state")
    op.drop_table("chat_session_changes")
    op.execute("DROP SEQUENCE chat_change_seq")
