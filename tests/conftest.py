"""Shared fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), a fresh migrated database
per test run, and a real grpc.aio server on port 0 with a real channel.

Tests isolate themselves by tenant: each test writes under tenant ids no other test uses, so the
server under test can run with its own connection pool and commit for real.

Every statement a test server issues is checked for tenant scoping as it is issued
(tests/helpers.py TENANCY); the test during whose setup, call or teardown a statement failed the
check fails with it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.data.embedded import start_embedded_postgres
from server.data.engine import create_engine
from server.data.migrate import upgrade_to_head
from tests.factories import Factory
from tests.helpers import TENANCY, serving

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA_DIR = REPO_ROOT / ".data" / "test"


def _fail_on_tenancy_violations(phase: str) -> Generator[None, object, object]:
    """Around one phase of one test: fail it if a statement issued meanwhile was not
    tenant-scoped (raised after the phase, so its own failure, if any, is chained)."""
    already = len(TENANCY.violations)
    try:
        return (yield)
    finally:
        found = TENANCY.violations[already:]
        if found:
            listed = "\n  ".join(str(violation) for violation in found[:5])
            pytest.fail(f"{len(found)} statement(s) not tenant-scoped during {phase}:\n  {listed}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fail_on_tenancy_violations("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fail_on_tenancy_violations("the test"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fail_on_tenancy_violations("teardown"))


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the PostgreSQL server the suite runs against (any database on it)."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        url = make_url(configured)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+asyncpg")
        return url.render_as_string(hide_password=False)
    return start_embedded_postgres(TEST_DATA_DIR)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A freshly created database, migrated to head, dropped after the run."""
    with _private_database(server_url) as url:
        upgrade_to_head(url)
        yield url


@contextmanager
def _private_database(server_url: str) -> Iterator[str]:
    name = f"sessionmonitoring_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """An empty data folder for an embedded PostgreSQL of the test's own. Not pytest's
    tmp_path: the embedded server's system user must reach it (test_replica.py), and its
    socket path must stay short."""
    root = Path(tempfile.mkdtemp(prefix="sm-data-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_database_url(server_url: str) -> Iterator[str]:
    """An empty database of this test's own (not migrated), for what would disturb the others:
    TRUNCATE, migrations up and down, bypassed triggers."""
    with _private_database(server_url) as url:
        yield url


async def _admin(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine the tests use to arrange and inspect rows directly."""
    test_engine = create_engine(database_url, pool_size=20, pool_timeout=10, connect_timeout=10)
    yield test_engine
    await test_engine.dispose()


@pytest.fixture(scope="session")
def issued_statements() -> list[str]:
    """Every SQL statement the server under test issued during the whole run."""
    return []


@pytest.fixture(scope="session")
async def grpc_target(database_url: str, issued_statements: list[str]) -> AsyncIterator[str]:
    """host:port of a real SessionMonitoring server (its own pool) on a free port.

    Every statement it issues is recorded in `issued_statements`, and checked as it is issued
    (the mechanical isolation guarantee: see `serving`).
    """
    async with serving(
        database_url, db_pool_size=10, db_pool_timeout=5, statements=issued_statements
    ) as app:
        yield f"127.0.0.1:{app.port}"


@pytest.fixture(scope="session")
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the server under test."""
    async with grpc.aio.insecure_channel(grpc_target) as open_channel:
        yield open_channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> pb_grpc.SessionMonitoringStub:
    """The generated client stub over the real channel."""
    return pb_grpc.SessionMonitoringStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def factory(engine: AsyncEngine) -> Factory:
    """Writes sessions and messages straight into the tables, as other services do."""
    return Factory(engine)
