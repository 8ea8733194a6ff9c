"""The benchmark's database and data: where it lives, generating it (or reusing it), and reading
back the facts the scenarios need (sizes, a closed session, a busy channel, a time window)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from server.data import counters
from server.data.embedded import start_embedded_postgres
from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from server.data.statements import Database
from server.tools.datagen import DatasetSpec, generate

EMBEDDED_DATA_DIR = Path(".data") / "bench"
FULL_DATABASE = "bench"
QUICK_DATABASE = "bench_quick"
# The two tenants of the optional size comparison; few messages each so 1M sessions load fast.
MILLION_TENANT = "bench-1m"
TEN_THOUSAND_TENANT = "bench-10k"
COMPARISON_MESSAGES_PER_SESSION = 2

FULL_SPEC = DatasetSpec()
QUICK_SPEC = DatasetSpec(
    sessions=3_000,
    messages_per_session=6,
    small_tenants=3,
    small_tenant_sessions=60,
    huge_sessions=1,
    huge_session_messages=1_000,
)


def comparison_specs(quick: bool) -> list[DatasetSpec]:
    """The 1M-session tenant (10k in quick mode) and the 10k one (1k in quick mode)."""
    large, small = (10_000, 1_000) if quick else (1_000_000, 10_000)
    return [
        DatasetSpec(
            sessions=sessions,
            messages_per_session=COMPARISON_MESSAGES_PER_SESSION,
            small_tenants=0,
            huge_sessions=0,
            tenant=tenant,
        )
        for tenant, sessions in ((MILLION_TENANT, large), (TEN_THOUSAND_TENANT, small))
    ]


def database_url(given: str | None, *, quick: bool, name: str | None = None) -> str:
    """`given` (BENCH_DATABASE_URL) as is, else a database (`name`, by default one for full and
    one for quick runs, so a quick run leaves the full dataset alone) on the embedded
    PostgreSQL, which runs until this process exits."""
    if given:
        return given
    server_url = start_embedded_postgres(EMBEDDED_DATA_DIR)
    name = name or (QUICK_DATABASE if quick else FULL_DATABASE)
    asyncio.run(_create_database(server_url, name))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def migrate(url: str) -> None:
    """Bring the schema to head (blocking: Alembic runs its own event loop)."""
    upgrade_to_head(url)


async def ensure(url: str, specs: list[DatasetSpec]) -> None:
    """Generate every spec's tenants that are missing; tenants already present are reused."""
    for spec in specs:
        summary = await generate(url, spec, progress=lambda line: print(f"  {line}", flush=True))
        if summary.sessions:
            print(
                f"  generated {summary.sessions:,} sessions, {summary.messages:,} messages "
                f"in {summary.seconds:.0f}s"
            )
    # The facts below read the counters alone, so what the load appended is folded first (the
    # service would do it within a second).
    folder = Database(url, pool_size=1, pool_timeout=30, connect_timeout=10)
    await folder.open()
    try:
        await counters.fold(folder)
    finally:
        await folder.close()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # Statistics for the planner, and the visibility map for index-only scans, before the
        # first measurement, so autovacuum does not start on the fresh rows mid-run. Cheap when
        # nothing changed since the last run.
        for table in (
            "chat_sessions",
            "chat_messages",
            "chat_session_counts",
            "chat_session_message_counts",
            "chat_session_count_deltas",
            "chat_message_count_deltas",
        ):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class TenantFacts:
    tenant_id: str
    sessions: int
    messages: int


@dataclass(frozen=True, slots=True)
class Facts:
    """What the scenarios are built from, read from the database as it is."""

    big: TenantFacts
    small: TenantFacts
    small_tenants: int
    closed_sessions: int
    channel: str
    channel_sessions: int
    window_start: datetime
    window_end: datetime
    window_sessions: int
    ordinary_session: str
    ordinary_messages: int
    huge_session: str
    huge_messages: int
    closed_session: str
    million: TenantFacts | None
    ten_thousand: TenantFacts | None
    total_sessions: int
    total_messages: int
    postgres_version: str


async def _tenant(conn: asyncpg.Connection, tenant_id: str) -> TenantFacts | None:
    sessions = await conn.fetchval(
        "SELECT coalesce(sum(n), 0) FROM chat_session_counts WHERE tenant_id = $1", tenant_id
    )
    if not sessions:
        return None
    messages = await conn.fetchval(
        "SELECT count(*) FROM chat_messages WHERE tenant_id = $1", tenant_id
    )
    return TenantFacts(tenant_id, int(sessions), int(messages))


async def _messages(conn: asyncpg.Connection, tenant_id: str, session_id: str) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM chat_messages WHERE tenant_id = $1 AND session_id = $2",
        tenant_id,
        session_id,
    )
    return int(count)


async def read_facts(url: str, spec: DatasetSpec, *, comparison: bool) -> Facts:
    """The facts of `spec`'s tenants; raises when the big or a small tenant is missing."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        big = await _tenant(conn, spec.big_tenant)
        small = await _tenant(conn, spec.small_tenant(0))
        if big is None or small is None:
            raise RuntimeError(
                f"tenants {spec.big_tenant!r} and {spec.small_tenant(0)!r} are missing: "
                "run without --skip-generate to create them"
            )
        tenant = big.tenant_id
        small_tenants = await conn.fetchval(
            "SELECT count(DISTINCT tenant_id) FROM chat_session_counts WHERE tenant_id LIKE $1",
            f"{spec.tenant_prefix}-small-%",
        )
        closed = await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM chat_session_counts"
            " WHERE tenant_id = $1 AND status = 'closed'",
            tenant,
        )
        channel, channel_sessions = await conn.fetchrow(
            "SELECT channel_type, sum(n) FROM chat_session_counts"
            " WHERE tenant_id = $1 AND channel_type IS NOT NULL"
            " GROUP BY channel_type ORDER BY 2 DESC, 1 LIMIT 1",
            tenant,
        )
        oldest = await conn.fetchval(
            "SELECT min(created_at) FROM chat_sessions WHERE tenant_id = $1", tenant
        )
        newest = await conn.fetchval(
            "SELECT max(created_at) FROM chat_sessions WHERE tenant_id = $1", tenant
        )
        # Seven days in the middle of the data, not aligned to midnight: whole days come from
        # the counters and both partial-day edges are counted row by row.
        middle = oldest + (newest - oldest) / 2
        window_start = middle.replace(hour=9, minute=30, second=0, microsecond=0) - timedelta(
            days=3
        )
        window_end = window_start + timedelta(days=7)
        window_sessions = await conn.fetchval(
            "SELECT count(*) FROM chat_sessions"
            " WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3",
            tenant,
            window_start,
            window_end,
        )
        ordinary = await conn.fetchval(
            "SELECT session_id FROM chat_sessions WHERE tenant_id = $1"
            " AND session_id NOT LIKE 'huge-%' ORDER BY created_at DESC, session_id DESC LIMIT 1",
            tenant,
        )
        huge = await conn.fetchval(
            "SELECT session_id FROM chat_sessions WHERE tenant_id = $1 AND session_id = 'huge-0'",
            tenant,
        )
        if huge is None:
            raise RuntimeError(f"session 'huge-0' of {tenant!r} is missing")
        closed_session = await conn.fetchval(
            "SELECT session_id FROM chat_sessions WHERE tenant_id = $1"
            " AND COALESCE(metadata ->> 'status', 'active') = 'closed'"
            " AND session_id NOT LIKE 'huge-%'"
            " ORDER BY created_at DESC, session_id DESC LIMIT 1",
            tenant,
        )
        if closed_session is None:
            raise RuntimeError(f"{tenant!r} has no closed session to re-close")
        million = ten_thousand = None
        if comparison:
            million = await _tenant(conn, MILLION_TENANT)
            ten_thousand = await _tenant(conn, TEN_THOUSAND_TENANT)
        total_sessions = await conn.fetchval("SELECT coalesce(sum(n), 0) FROM chat_session_counts")
        total_messages = await conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'chat_messages'"
        )
        return Facts(
            big=big,
            small=small,
            small_tenants=int(small_tenants),
            closed_sessions=int(closed),
            channel=str(channel),
            channel_sessions=int(channel_sessions),
            window_start=window_start,
            window_end=window_end,
            window_sessions=int(window_sessions),
            ordinary_session=str(ordinary),
            ordinary_messages=await _messages(conn, tenant, str(ordinary)),
            huge_session=str(huge),
            huge_messages=await _messages(conn, tenant, str(huge)),
            closed_session=str(closed_session),
            million=million,
            ten_thousand=ten_thousand,
            total_sessions=int(total_sessions),
            total_messages=max(0, int(total_messages)),
            postgres_version=str(await conn.fetchval("SHOW server_version")),
        )
    finally:
        await conn.close()
