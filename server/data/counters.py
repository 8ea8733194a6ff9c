"""Keeping the counters: folding the writers' deltas into them, and checking them against a
recount.

The writers' triggers only append deltas (migration 0004). `fold` moves committed deltas into
the counters; every step is one statement (atomic, one snapshot), and a DELETE ... RETURNING
only returns the rows it deleted itself, so two folders can never fold a delta twice. The
advisory lock just keeps a second instance from doing the same work at the same time. Readers
add counters and unfolded deltas in one statement, so a fold is invisible to them.

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

# pg_try_advisory_xact_lock key shared by every instance's folder ("smcounts" in ASCII).
FOLD_LOCK_KEY = 0x736D636F756E7473
FOLD_BATCH = 10_000


def _clamped(total: str) -> str:
    """`total` within BIGINT: one absurd delta (a hand edit) must not stop the folding."""
    return f"LEAST(GREATEST({total}, -9223372036854775808), 9223372036854775807)"


def _fold(deltas: str, counters: str, key: str) -> Compiled:
    """One statement moving up to :batch committed deltas into their counters, each table pair
    on its own. A writer's TRUNCATE of a chat table truncates these two tables too (migration
    0004) and can deadlock with a fold in flight; PostgreSQL then aborts one of them, and a
    folder that lost retries at its next round (App.fold_counters)."""
    return compile_statement(
        text(
            f"""
    WITH lock AS (SELECT pg_try_advisory_xact_lock(:lock_key) AS held),
    moved AS (
      DELETE FROM {deltas}
       WHERE (SELECT held FROM lock)
         AND ctid = ANY (ARRAY(SELECT ctid FROM {deltas} LIMIT :batch))
      RETURNING {key}, n
    ), folded AS (
      INSERT INTO {counters} AS c ({key}, n)
      SELECT {key}, {_clamped("sum(n)")} FROM moved GROUP BY {key}
      ON CONFLICT ({key}) DO UPDATE SET n = {_clamped("CAST(c.n AS numeric) + EXCLUDED.n")}
    )
    SELECT (SELECT held FROM lock) AS held, (SELECT count(*) FROM moved) AS folded
    """
        )
    )


_SESSION_KEY = "tenant_id, day, status, channel_type"
_MESSAGE_KEY = "tenant_id, session_id"
_FOLD_SESSIONS = _fold("chat_session_count_deltas", "chat_session_counts", _SESSION_KEY)
_FOLD_MESSAGES = _fold("chat_message_count_deltas", "chat_session_message_counts", _MESSAGE_KEY)


def _drop_zeros(counters: str) -> Compiled:
    """Counters that fell to zero (their sessions were deleted) are dropped, through a partial
    index."""
    return compile_statement(
        text(
            f"""
    WITH lock AS (SELECT pg_try_advisory_xact_lock(:lock_key) AS held)
    DELETE FROM {counters} WHERE n = 0 AND (SELECT held FROM lock)
    """
        )
    )


_DROP_ZEROS = (_drop_zeros("chat_session_counts"), _drop_zeros("chat_session_message_counts"))


# A VACUUM right after each fold makes the folded rows' room reusable at once and clears their
# index entries (autovacuum looks at a database about once a minute). The tables never truncate
# (vacuum_truncate off, migration 0004): that would take a lock writers wait for.
_VACUUM_DELTAS = Compiled(
    "VACUUM (SKIP_LOCKED) chat_session_count_deltas, chat_message_count_deltas", (), {}
)


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one `fold` did: whether it held the lock, and how many deltas it folded."""

    held: bool
    session_deltas: int
    message_deltas: int


async def fold(database: Database, *, batch: int = FOLD_BATCH) -> FoldResult:
    """Fold every delta committed so far into the counters, `batch` rows per statement, unless
    another instance is folding right now."""
    folded = {"sessions": 0, "messages": 0}
    for name, statement in (("sessions", _FOLD_SESSIONS), ("messages", _FOLD_MESSAGES)):
        while True:
            row = (await database.fetch(statement, {"lock_key": FOLD_LOCK_KEY, "batch": batch}))[0]
            if not row["held"]:
                return FoldResult(False, folded["sessions"], folded["messages"])
            folded[name] += row["folded"]
            if row["folded"] < batch:
                break
    if folded["sessions"] or folded["messages"]:
        for statement in _DROP_ZEROS:
            await database.fetch(statement, {"lock_key": FOLD_LOCK_KEY})
        await database.fetch(_VACUUM_DELTAS, {})
    return FoldResult(True, folded["sessions"], folded["messages"])


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
