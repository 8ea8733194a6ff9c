"""What each CLI command does: resolve the database (embedded or given), migrate, serve."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from server import app
from server.config import Settings
from server.data import counters
from server.data.embedded import start_embedded_postgres
from server.data.migrate import UnsupportedServerError, upgrade_to_head
from server.data.statements import Database
from server.observability import configure_logging
from server.transport.auth import CallerPolicy, PolicyError, load_policy

T = TypeVar("T")

EXIT_USAGE = 2

logger = logging.getLogger(__name__)


def database_url(settings: Settings) -> tuple[str, bool]:
    """The database to use and whether it is the embedded one."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    logger.info("DATABASE_URL is not set: starting the embedded PostgreSQL")
    return start_embedded_postgres(settings.data_dir), True


def migrate(settings: Settings) -> int:
    """`python -m server migrate`: bring the schema to the newest migration."""
    url, _ = database_url(settings)
    try:
        upgrade_to_head(url)
    except UnsupportedServerError as error:
        logger.error("%s", error)  # noqa: TRY400 -- a fact about the server, not a crash
        return 1
    logger.info("database schema is up to date")
    return 0


_DRIFT_LINES = 100  # a whole bypassed bulk load would otherwise print a line per session


def check_counts(settings: Settings, *, tenant_id: str | None, repair: bool) -> int:
    """`python -m server check-counts`: report every counter that differs from a recount, one
    line each on stdout, and with `repair` correct them; 1 when drift was found unrepaired."""
    url, _ = database_url(settings)

    async def run() -> counters.Drift:
        database = Database(url, pool_size=1, pool_timeout=5, connect_timeout=5)
        await database.open()
        try:
            return await counters.check(database, tenant_id=tenant_id, repair=repair)
        finally:
            await database.close()

    drift = asyncio.run(run())
    lines = [
        f"sessions tenant={bucket.tenant_id!r} day={bucket.day.isoformat()} "
        f"status={bucket.status!r} channel={bucket.channel_type!r} drift={bucket.drift:+d}"
        for bucket in drift.sessions
    ] + [
        f"messages tenant={session.tenant_id!r} session={session.session_id!r} "
        f"drift={session.drift:+d}"
        for session in drift.messages
    ]
    for line in lines[:_DRIFT_LINES]:
        print(line)
    if len(lines) > _DRIFT_LINES:
        print(f"... and {len(lines) - _DRIFT_LINES} more")
    scope = f"tenant {tenant_id!r}" if tenant_id is not None else "all tenants"
    found = len(drift.sessions) + len(drift.messages)
    verdict = "repaired" if repair else "found"
    print(f"{scope}: {found} counters drifted ({verdict})" if found else f"{scope}: exact")
    return 1 if found and not repair else 0


def serve(settings: Settings) -> int:
    """`python -m server [serve]`: serve until SIGTERM/SIGINT. The embedded database is migrated
    first (`python -m server.tools seed-demo` loads demo data into it); a given DATABASE_URL is
    used as is (run `migrate` for it). With `--workers N`, N processes share the port, each with
    its own pool."""
    try:
        policy = load_policy(settings.caller_policy_file) if settings.caller_policy_file else None
    except PolicyError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    if settings.workers > 1 and settings.address.endswith(":0"):
        print("--workers needs a fixed port: the workers must share one", file=sys.stderr)
        return EXIT_USAGE
    url, embedded = database_url(settings)
    if embedded:
        upgrade_to_head(url)
    read_url = settings.database_read_url.get_secret_value() if settings.database_read_url else None
    if policy is not None:
        logger.info("caller policy on: %s", settings.caller_policy_file)
    if settings.workers == 1:
        return _serve_one(settings, url, read_url, policy, 0)
    return _serve_many(settings, url, read_url, policy)


def _serve_one(
    settings: Settings,
    url: str,
    read_url: str | None,
    policy: CallerPolicy | None,
    worker: int,
) -> int:
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    try:
        run_on_fastest_loop(
            app.serve(settings, url, read_url=read_url, policy=policy, metrics_port_offset=worker)
        )
    except app.StartupError as error:
        # One clear line, no traceback: this is a configuration mistake, not a crash.
        logger.error("%s", error)  # noqa: TRY400
        return EXIT_USAGE
    return 0


def _serve_many(
    settings: Settings, url: str, read_url: str | None, policy: CallerPolicy | None
) -> int:
    """Run `settings.workers` server processes; forward SIGTERM/SIGINT and wait for them all."""
    context = multiprocessing.get_context("spawn")  # no fork after grpc/asyncio have started
    workers = [
        context.Process(
            target=_serve_one, args=(settings, url, read_url, policy, index), name=f"worker-{index}"
        )
        for index in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    logger.info("started %d workers sharing %s", len(workers), settings.address)

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        logger.error("workers exited with errors: %s", ", ".join(failed))
        return 1
    return 0


def run_on_fastest_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where available: its event loop is measurably faster (see BENCHMARKS.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
