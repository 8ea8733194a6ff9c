"""Keeping the counters and the change log: folding the writers' deltas into both, and
checking the counters against a recount.

The writers' triggers only append rows to the delta tables (migrations 0004 and 0005). `fold`
moves every committed one, in one statement (one snapshot), into the counters and into the
change log `chat_session_changes`, giving each change its `position`. Readers add counters and
unfolded deltas in one statement, so a fold is invisible to them.

Why positions are gap-free and in commit order, as the watch promises:
- Only the folder holding FOLD_LOCK_KEY assigns positions, and it commits each move before the
  next, so every position is visible before any larger one: a reader of `position > p` never
  skips a change that was made early and committed late (a change has no position until then).
- A move takes *every* delta its snapshot sees. Two changes of one session conflict on the
  session's row lock (or one made the other's row), so the later one was made after the earlier
  one committed: it drew a larger `seq`, and it is never visible to a move that cannot see the
  earlier one. Ordering transactions by the largest `seq` each drew therefore keeps every such
  pair in commit order, within a move and across moves.
- A transaction's changes get consecutive positions (atomic runs).

The fold lock is taken before any table is touched, in its own statement: a writer's TRUNCATE
takes the same lock before truncating counters and deltas (migration 0005), so the two can
never hold one table each while waiting for the other.

`drift` and `repair` compare the counters with a recount of the rows, for when triggers were
bypassed (`session_replication_role = replica`, `pg_restore --disable-triggers`, a disabled
trigger). A repair adds `recount - (counters + deltas)`, all read in one snapshot, to the
counters: additive like every other change, so it is exact while writers keep writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import column, text

from server.data.statements import Compiled, Database, compile_statement
from server.data.status_sql import counter_day, displayed_status, render

# pg_try_advisory_xact_lock key shared by every instance's folder ("smcounts" in ASCII), and
# taken by the TRUNCATE triggers (migration 0005 holds a frozen copy).
FOLD_LOCK_KEY = 0x736D636F756E7473
# Woken readers of the change log (one listening connection per server process).
CHANGES_CHANNEL = "sessionmonitoring_changes"
# A fold this large is followed by a VACUUM of the delta tables (see _VACUUM_DELTAS).
VACUUM_AFTER = 10_000


def _clamped(total: str) -> str:
    """`total` within BIGINT: one absurd delta (a hand edit) must not stop the folding."""
    return f"LEAST(GREATEST({total}, -9223372036854775808), 9223372036854775807)"


def _fold_into(moved: str, counters: str, key: str) -> str:
    return f"""
      INSERT INTO {counters} AS c ({key}, n)
      SELECT {key}, {_clamped("sum(n)")} FROM {moved} WHERE n <> 0 GROUP BY {key}
      ON CONFLICT ({key}) DO UPDATE SET n = {_clamped("CAST(c.n AS numeric) + EXCLUDED.n")}"""


_SESSION_KEY = "tenant_id, day, status, channel_type"
_MESSAGE_KEY = "tenant_id, session_id"
_LOGGED = (
    'xid, seq, tenant_id, session_id, kind, existed, old_status, old_channel_type, "exists", '
    "status, channel_type, created_at, updated_at, metadata, message_id, message_role, "
    "message_created_at"
)
_XID = "CAST(CAST(xid AS text) AS bigint)"

# One statement: every visible delta leaves its table, adds to its counter, and (when a trigger
# of 0005 wrote it: `op` set) becomes a change in the log. A session's rows in one transaction
# make one change: it existed before unless its first row inserted it, it exists after unless
# its last row deleted it; a session that came and went within one transaction is no change.
_MOVE = compile_statement(
    text(
        f"""
    WITH moved_sessions AS (
      DELETE FROM chat_session_count_deltas RETURNING *
    ), moved_messages AS (
      DELETE FROM chat_message_count_deltas RETURNING *
    ), folded_sessions AS ({_fold_into("moved_sessions", "chat_session_counts", _SESSION_KEY)}
    ), folded_messages AS ({
            _fold_into("moved_messages", "chat_session_message_counts", _MESSAGE_KEY)
        }
    ), per_session AS (
      SELECT DISTINCT ON (xid, tenant_id, session_id)
             xid, tenant_id, session_id, first_value(seq) OVER w AS first_seq,
             first_value(op) OVER w <> 'I' AS existed, op <> 'D' AS "exists",
             first_value(status) OVER w AS old_status,
             first_value(channel_type) OVER w AS old_channel_type,
             status, channel_type, created_at, updated_at, metadata
        FROM moved_sessions WHERE op IN ('I', 'U', 'D')
      WINDOW w AS (PARTITION BY xid, tenant_id, session_id ORDER BY seq)
       ORDER BY xid, tenant_id, session_id, seq DESC
    ), per_message AS (
      SELECT DISTINCT ON (xid, tenant_id, message_id) *
        FROM moved_messages WHERE op IS NOT NULL
       ORDER BY xid, tenant_id, message_id, seq DESC
    ), changes AS (
      SELECT xid, first_seq AS seq, tenant_id, session_id,
             CASE WHEN NOT existed THEN 'A' WHEN "exists" THEN 'U' ELSE 'R' END AS kind,
             existed, old_status, old_channel_type, "exists", status, channel_type, created_at,
             updated_at, metadata, CAST(NULL AS bigint) AS message_id,
             CAST(NULL AS varchar) AS message_role,
             CAST(NULL AS timestamptz) AS message_created_at
        FROM per_session WHERE existed OR "exists"
      UNION ALL
      -- A message that arrived (inserted, or moved into its session) and stayed: its last
      -- row in the transaction adds it somewhere.
      SELECT xid, seq, tenant_id, session_id, 'M', true, NULL, NULL, true, NULL, NULL, NULL,
             NULL, NULL, message_id, role, created_at
        FROM per_message WHERE n = 1
      UNION ALL
      -- A TRUNCATE: the history of every tenant restarts here.
      SELECT xid, seq, tenant_id, session_id, 'T', false, NULL, NULL, false, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL
        FROM moved_sessions WHERE op = 'T'
    ), ordered AS (
      SELECT *, max(seq) OVER (PARTITION BY xid) AS last_seq FROM changes
    ), advanced AS (
      UPDATE chat_change_log_state
         SET last_position = last_position + (SELECT count(*) FROM changes),
             oldest_resumable = CASE WHEN EXISTS (SELECT FROM changes WHERE kind = 'T')
               THEN last_position + (SELECT count(*) FROM changes) ELSE oldest_resumable END
       WHERE EXISTS (SELECT FROM changes)
      RETURNING last_position - (SELECT count(*) FROM changes) AS base, last_position
    ), logged AS (
      INSERT INTO chat_session_changes (position, committed_at, {_LOGGED.replace("seq, ", "")})
      SELECT (SELECT base FROM advanced) + row_number() OVER (ORDER BY last_seq, seq),
             statement_timestamp(), {_LOGGED.replace("xid", _XID).replace("seq, ", "")}
        FROM ordered
    )
    SELECT (SELECT count(*) FROM moved_sessions) AS session_deltas,
           (SELECT count(*) FROM moved_messages) AS message_deltas,
           (SELECT last_position FROM advanced) AS last_position,
           -- The readers' wake-up, sent at commit, in this same round trip.
           (SELECT pg_notify('{CHANGES_CHANNEL}', CAST(last_position AS text)) FROM advanced)
             AS notified
    """
    )
)
_TAKE_LOCK = "SELECT pg_try_advisory_xact_lock($1)"


def _drop_zeros(counters: str) -> Compiled:
    """Counters that fell to zero (their sessions were deleted) are dropped, through a partial
    index."""
    return compile_statement(text(f"DELETE FROM {counters} WHERE n = 0"))


_DROP_ZEROS = (_drop_zeros("chat_session_counts"), _drop_zeros("chat_session_message_counts"))


# A VACUUM right after a large fold makes the folded rows' room reusable at once and clears
# their index entries (autovacuum looks at a database about once a minute). The tables never
# truncate (vacuum_truncate off, migration 0004): that would take a lock writers wait for.
_VACUUM_DELTAS = Compiled(
    "VACUUM (SKIP_LOCKED) chat_session_count_deltas, chat_message_count_deltas", (), {}
)


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one `fold` did: whether it held the lock, how many deltas it folded, and the last
    position of the change log after it (None when it logged nothing)."""

    held: bool
    session_deltas: int
    message_deltas: int
    last_position: int | None = None


async def fold(database: Database, *, drop_zeros: bool = True) -> FoldResult:
    """Fold every delta committed so far into the counters and the change log, unless another
    instance is folding right now; wake the log's readers when it logged changes. With
    `drop_zeros`, counters that fell to zero go too (the service does it once a second, not
    every round: zeros only cost a little room)."""
    # READ COMMITTED whatever the server's default: each statement's snapshot is taken once the
    # lock is held, and the move sees every delta committed by then.
    async with (
        database.connection() as connection,
        connection.transaction(isolation="read_committed"),
    ):
        if not await connection.fetchval(_TAKE_LOCK, FOLD_LOCK_KEY):
            return FoldResult(False, 0, 0)
        row = await connection.fetchrow(_MOVE.sql)
        result = FoldResult(
            True, row["session_deltas"], row["message_deltas"], row["last_position"]
        )
        if drop_zeros:
            for statement in _DROP_ZEROS:
                await connection.execute(statement.sql)
    if result.session_deltas + result.message_deltas >= VACUUM_AFTER:
        await database.fetch(_VACUUM_DELTAS, {})
    return result


@dataclass(frozen=True, slots=True)
class SessionDrift:
    """A session-count bucket whose counter differs from a recount by `drift` (recount minus
    counter)."""

    tenant_id: str
    day: date
    status: str
    channel_type: str | None
    drift: int


@dataclass(frozen=True, slots=True)
class MessageDrift:
    """A session whose message counter differs from a recount by `drift`."""

    tenant_id: str
    session_id: str
    drift: int


_TENANT_FILTER = "(CAST(:tenant_id AS text) IS NULL OR tenant_id = CAST(:tenant_id AS text))"

# Rows count +1 in their bucket, counters and deltas -1 per unit: what is left is the drift.
_SESSION_DRIFT = f"""
    SELECT tenant_id, day, status, channel_type, CAST(sum(n) AS BIGINT) AS drift FROM (
      SELECT tenant_id, {render(counter_day(column("created_at")))} AS day,
             {render(displayed_status(column("metadata")))} AS status, channel_type, count(*) AS n
        FROM chat_sessions WHERE {_TENANT_FILTER} GROUP BY 1, 2, 3, 4
      UNION ALL
      SELECT tenant_id, day, status, channel_type, -n FROM chat_session_counts
       WHERE {_TENANT_FILTER}
      UNION ALL
      SELECT tenant_id, day, status, channel_type, -n FROM chat_session_count_deltas
       WHERE {_TENANT_FILTER}
    ) AS b GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
"""
_MESSAGE_DRIFT = f"""
    SELECT tenant_id, session_id, CAST(sum(n) AS BIGINT) AS drift FROM (
      SELECT tenant_id, session_id, count(*) AS n FROM chat_messages
       WHERE {_TENANT_FILTER} GROUP BY 1, 2
      UNION ALL
      SELECT tenant_id, session_id, -n FROM chat_session_message_counts WHERE {_TENANT_FILTER}
      UNION ALL
      SELECT tenant_id, session_id, -n FROM chat_message_count_deltas WHERE {_TENANT_FILTER}
    ) AS m GROUP BY 1, 2 HAVING sum(n) <> 0
"""


def _repair(drift: str, counters: str, key: str) -> Compiled:
    return compile_statement(
        text(
            f"""
    WITH drift AS ({drift}), repaired AS (
      INSERT INTO {counters} AS c ({key}, n) SELECT {key}, drift FROM drift
      ON CONFLICT ({key}) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    SELECT * FROM drift
    """
        )
    )


_CHECK_SESSIONS = compile_statement(text(_SESSION_DRIFT))
_CHECK_MESSAGES = compile_statement(text(_MESSAGE_DRIFT))
_REPAIR_SESSIONS = _repair(_SESSION_DRIFT, "chat_session_counts", _SESSION_KEY)
_REPAIR_MESSAGES = _repair(_MESSAGE_DRIFT, "chat_session_message_counts", _MESSAGE_KEY)


@dataclass(frozen=True, slots=True)
class Drift:
    """Every counter that disagrees with a recount."""

    sessions: list[SessionDrift]
    messages: list[MessageDrift]

    @property
    def clean(self) -> bool:
        """Whether every counter agreed with the recount."""
        return not self.sessions and not self.messages


async def check(database: Database, *, tenant_id: str | None, repair: bool) -> Drift:
    """Recount sessions and messages (of one tenant, or all) and report the counters that
    differ; with `repair`, correct them in the same statements."""
    params = {"tenant_id": tenant_id}
    session_rows = await database.fetch(_REPAIR_SESSIONS if repair else _CHECK_SESSIONS, params)
    message_rows = await database.fetch(_REPAIR_MESSAGES if repair else _CHECK_MESSAGES, params)
    return Drift(
        [SessionDrift(*row) for row in session_rows],
        [MessageDrift(*row) for row in message_rows],
    )
