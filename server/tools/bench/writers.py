"""What our triggers cost the other services that write the chat tables (the writers' tax).

16 connections each insert a session and its first message for one busy tenant per
transaction, committed at once or held open 20 ms (the app's work before commit), in rounds
that alternate between our triggers enabled and disabled (this machine drifts within seconds:
rounds minutes apart would compare the drift). The service's folder runs meanwhile at its
default interval (in this process, with the service's own code), as in production. Also: a bulk
COPY of 100,000 messages with and without the triggers, how long the service takes to fold what
it appended, and whether a writer transaction held open blocks a status update of another
session of its bucket.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

from server.config import Settings
from server.data import counters
from server.data.engine import asyncpg_dsn
from server.data.statements import Database

TENANT = "bench-writers"
WRITERS = 16
HOLDS_MS = (0.0, 20.0)
COPY_ROWS = 100_000
COPY_SESSIONS = 1_000
_INSERT_SESSION = (
    "INSERT INTO chat_sessions (tenant_id, session_id, channel_type, metadata, created_at, "
    "updated_at) VALUES ($1, $2, 'web', NULL, now(), now())"
)
_INSERT_MESSAGE = (
    "INSERT INTO chat_messages (tenant_id, session_id, role, content, metadata, created_at) "
    "VALUES ($1, $2, 'user', 'hello', NULL, now())"
)


@dataclass(slots=True)
class WritersResult:
    """Transactions per second by hold time, with and without our triggers, round by round."""

    rounds: int
    seconds: float
    enabled: dict[float, list[float]] = field(default_factory=dict)
    disabled: dict[float, list[float]] = field(default_factory=dict)
    copy_enabled_s: list[float] = field(default_factory=list)
    copy_disabled_s: list[float] = field(default_factory=list)
    fold_s: list[float] = field(default_factory=list)
    update_waited_ms: dict[bool, float] = field(default_factory=dict)  # by triggers enabled
    update_blocked: dict[bool, bool] = field(default_factory=dict)

    def ratio(self, hold: float) -> float:
        """Median enabled over median disabled throughput."""
        return statistics.median(self.enabled[hold]) / statistics.median(self.disabled[hold])


async def _set_triggers(connection: asyncpg.Connection, *, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    for table in ("chat_sessions", "chat_messages"):
        names = await connection.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal",
            table,
        )
        for row in names:
            await connection.execute(f'ALTER TABLE {table} {verb} TRIGGER "{row["tgname"]}"')


async def _writer(dsn: str, until: float, hold: float, done: list[int]) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        while time.monotonic() < until:
            session_id = uuid.uuid4().hex
            async with connection.transaction():
                await connection.execute(_INSERT_SESSION, TENANT, session_id)
                await connection.execute(_INSERT_MESSAGE, TENANT, session_id)
                if hold:
                    await asyncio.sleep(hold)
            done[0] += 1
    finally:
        await connection.close()


async def _throughput(dsn: str, seconds: float, hold_ms: float) -> float:
    done = [0]
    start = time.monotonic()
    await asyncio.gather(
        *(_writer(dsn, start + seconds, hold_ms / 1000, done) for _ in range(WRITERS))
    )
    return done[0] / (time.monotonic() - start)


async def _update_blocked(dsn: str) -> tuple[bool, float]:
    """Hold a writer transaction that inserted a session; meanwhile close another session of
    the same tenant, day and channel as the service does. Blocked (3 s timeout)?"""
    holder, updater = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        other = "other-" + uuid.uuid4().hex
        await holder.execute(_INSERT_SESSION, TENANT, other)
        open_transaction = holder.transaction()
        await open_transaction.start()
        await holder.execute(_INSERT_SESSION, TENANT, "open-" + uuid.uuid4().hex)
        await updater.execute("SET statement_timeout = '3s'")
        start = time.monotonic()
        try:
            await updater.execute(
                "UPDATE chat_sessions SET metadata = COALESCE(metadata, '{}'::jsonb) "
                '|| \'{"status": "closed"}\', updated_at = now() '
                "WHERE tenant_id = $1 AND session_id = $2",
                TENANT,
                other,
            )
            blocked = False
        except asyncpg.QueryCanceledError:
            blocked = True
        waited_ms = (time.monotonic() - start) * 1000
        await open_transaction.rollback()
        return blocked, waited_ms
    finally:
        await holder.close()
        await updater.close()


async def _copy(connection: asyncpg.Connection) -> float:
    """Seconds to COPY COPY_ROWS messages into COPY_SESSIONS fresh sessions."""
    prefix = uuid.uuid4().hex[:8]
    sessions = [f"copy-{prefix}-{index}" for index in range(COPY_SESSIONS)]
    await connection.copy_records_to_table(
        "chat_sessions",
        records=[(TENANT, session) for session in sessions],
        columns=["tenant_id", "session_id"],
    )
    records = [(TENANT, sessions[index % COPY_SESSIONS], "user") for index in range(COPY_ROWS)]
    start = time.monotonic()
    await connection.copy_records_to_table(
        "chat_messages", records=records, columns=["tenant_id", "session_id", "role"]
    )
    return time.monotonic() - start


async def _fold_forever(folder: Database) -> None:
    interval = Settings.model_fields["counter_fold_interval"].default
    while True:
        await asyncio.sleep(interval)
        await counters.fold(folder)


async def measure(database_url: str, *, rounds: int, seconds: float) -> WritersResult:
    """The whole writers section; leaves the benchmark tenant's counters exact and its rows
    gone."""
    dsn = asyncpg_dsn(database_url)
    result = WritersResult(rounds, seconds)
    admin = await asyncpg.connect(dsn)
    folder = Database(database_url, pool_size=1, pool_timeout=30, connect_timeout=10)
    await folder.open()
    folding = asyncio.create_task(_fold_forever(folder))
    try:
        for hold in HOLDS_MS:
            result.enabled[hold], result.disabled[hold] = [], []
            for index in range(rounds):
                order = (True, False) if index % 2 == 0 else (False, True)
                for enabled in order:
                    await _set_triggers(admin, enabled=enabled)
                    rate = await _throughput(dsn, seconds, hold)
                    (result.enabled if enabled else result.disabled)[hold].append(rate)
        for enabled in (True, False):
            await _set_triggers(admin, enabled=enabled)
            (
                result.update_blocked[enabled],
                result.update_waited_ms[enabled],
            ) = await _update_blocked(dsn)
        folding.cancel()
        for index in range(rounds):
            for enabled in (True, False) if index % 2 == 0 else (False, True):
                await _set_triggers(admin, enabled=enabled)
                seconds_taken = await _copy(admin)
                (result.copy_enabled_s if enabled else result.copy_disabled_s).append(seconds_taken)
                if enabled:
                    start = time.monotonic()
                    await counters.fold(folder)
                    result.fold_s.append(time.monotonic() - start)
    finally:
        folding.cancel()
        await _set_triggers(admin, enabled=True)
        # The disabled rounds wrote rows no trigger counted: recount, then delete them all.
        await counters.check(folder, tenant_id=TENANT, repair=True)
        await admin.execute("DELETE FROM chat_sessions WHERE tenant_id = $1", TENANT)
        await counters.fold(folder)
        await folder.close()
        await admin.close()
    return result


def main() -> None:
    """`python -m server.tools.bench.writers DATABASE_URL`: this section alone, printed (for A/B
    work on the triggers; `make bench` puts it in BENCHMARKS.md)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="a migrated database (SQLAlchemy URL)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(measure(args.database_url, rounds=args.rounds, seconds=args.seconds))
    for line in summary(result):
        print(line)


def summary(result: WritersResult) -> list[str]:
    """One line per measurement."""
    lines = [
        f"hold {hold:g} ms: {statistics.median(result.enabled[hold]):,.0f} tx/s with our "
        f"triggers, {statistics.median(result.disabled[hold]):,.0f} without: "
        f"{result.ratio(hold):.2f}x (rounds: "
        + ", ".join(
            f"{on / off:.2f}"
            for on, off in zip(result.enabled[hold], result.disabled[hold], strict=True)
        )
        + ")"
        for hold in HOLDS_MS
    ]
    copy_on, copy_off = (
        statistics.median(result.copy_enabled_s),
        statistics.median(result.copy_disabled_s),
    )
    lines.append(
        f"COPY of {COPY_ROWS:,} messages: {copy_on:.2f} s with our triggers, {copy_off:.2f} s "
        f"without ({(copy_on - copy_off) / COPY_ROWS * 1e6:.1f} us per row, "
        f"{copy_off / copy_on:.2f}x); folding its deltas took "
        f"{statistics.median(result.fold_s):.2f} s"
    )
    lines.append(
        "status update of another session while a writer holds its transaction open: "
        + "; ".join(
            f"{'with' if enabled else 'without'} our triggers "
            + ("blocked" if result.update_blocked[enabled] else "not blocked")
            + f" ({result.update_waited_ms[enabled]:.0f} ms)"
            for enabled in (True, False)
        )
    )
    return lines


if __name__ == "__main__":
    main()
