"""Server assembly and lifecycle: the gRPC server with its interceptor, health and reflection,
TLS, the database pools and their health probe, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Imported at runtime behind a `sys.version_info[1]` check that mypy cannot evaluate.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.config import Settings
from server.data import change_log, counters
from server.data.statements import Database, TracedDatabase
from server.observability import Metrics
from server.tracing import TRACER_NAME, otlp_tracer_provider
from server.transport.auth import CallerPolicy
from server.transport.interceptors import ServiceInterceptor
from server.transport.reflection import enable_documented_reflection
from server.transport.servicer import SessionMonitoringService
from server.transport.watch_feed import ChangeFeed
from server.transport.watch_stream import Watcher, WatchSettings

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SessionMonitoring"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Readiness per health service name. "" and SERVICE_NAME: the reads (ListSessions,
# GetSessionDetail) can be served, i.e. the database they read answers (the replica when one is
# configured, else the primary), so a primary outage does not take reads offline behind a
# replica. WRITES_HEALTH_NAME: UpdateSessionStatus can be served, i.e. the primary answers.
WRITES_HEALTH_NAME = f"{SERVICE_NAME}/UpdateSessionStatus"
_PROBE_TIMEOUT = 2.0
PRUNE_INTERVAL = 10.0  # seconds between prunes of the change log
DROP_ZEROS_INTERVAL = 1.0  # seconds between drops of counters that fell to zero


class StartupError(RuntimeError):
    """Raised when the server cannot start as configured (address, TLS files)."""


@dataclass
class App:
    """A configured server: start it, stop it, and keep its health in step with the database."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    databases: tuple[Database, ...]  # the primary, then the read replica if any
    probe_interval: float
    # Its own connection on the primary: background upkeep never waits for a serving slot.
    maintenance: Database
    fold_interval: float
    feed: ChangeFeed
    watch_retention: float
    tracer_provider: TracerProvider | None = None  # flushed and shut down on stop
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _serving: dict[str, bool] = field(default_factory=dict, init=False)  # by health name
    _fold_failing: bool = field(default=False, init=False)

    async def start(self) -> None:
        """Start serving; health follows the database from the first probe on, and the
        counters' deltas are folded every `fold_interval` seconds."""
        for database in (*self.databases, self.maintenance, self.feed.database):
            await database.open()
        await self.feed.start()
        await self.server.start()
        await self.check_database()
        self._tasks = [
            asyncio.create_task(self._probe_forever(), name="database-health-probe"),
            asyncio.create_task(self._fold_forever(), name="counter-folder"),
        ]

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within `grace`,
        then close the database pools."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._set_serving(dict.fromkeys(self._serving, False))
        await self.feed.close()  # watch streams end now, each with a last bookmark
        await self.server.stop(grace)
        for database in (*self.databases, self.maintenance, self.feed.database):
            await database.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)

    async def fold_counters(self, *, drop_zeros: bool = True) -> counters.FoldResult | None:
        """Fold the counters' deltas once; None (logged once per outage) when it failed."""
        try:
            result = await counters.fold(self.maintenance, drop_zeros=drop_zeros)
        except Exception as error:  # the next round retries; reads stay exact meanwhile
            if not self._fold_failing:
                logger.warning("folding counter deltas failed: %s", error.__class__.__name__)
            self._fold_failing = True
            return None
        self._fold_failing = False
        return result

    async def check_database(self) -> bool:
        """Probe every database once and publish readiness per health name (see
        WRITES_HEALTH_NAME); True when every database answered."""
        reachable = [await self._answers(database) for database in self.databases]
        reads, writes = reachable[-1], reachable[0]  # the replica, if any, is last
        await self._set_serving({"": reads, SERVICE_NAME: reads, WRITES_HEALTH_NAME: writes})
        return all(reachable)

    async def _answers(self, database: Database) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                await database.ping()
        except Exception as error:  # any failure to answer means "not serving"
            name = WRITES_HEALTH_NAME if database is self.databases[0] else SERVICE_NAME
            if self._serving.get(name) is not False:  # once per outage
                logger.warning("database probe failed: %s", error.__class__.__name__)
            return False
        return True

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            await self.check_database()

    async def _fold_forever(self) -> None:
        pruned_at = zeros_dropped_at = 0.0
        while True:
            await asyncio.sleep(self.fold_interval)
            drop_zeros = time.monotonic() - zeros_dropped_at >= DROP_ZEROS_INTERVAL
            if drop_zeros:
                zeros_dropped_at = time.monotonic()
            await self.fold_counters(drop_zeros=drop_zeros)
            if time.monotonic() - pruned_at >= PRUNE_INTERVAL:
                pruned_at = time.monotonic()
                with contextlib.suppress(Exception):  # the next round retries
                    await change_log.prune(self.maintenance, retention=self.watch_retention)

    async def _set_serving(self, serving: dict[str, bool]) -> None:
        for name, now in serving.items():
            before = self._serving.get(name)
            if now == before:
                continue
            if before is not None:
                logger.info("health: %s for %r", "SERVING" if now else "NOT_SERVING", name)
            self._serving[name] = now
            await self.health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if now
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )


def create_app(
    settings: Settings,
    database_url: str,
    *,
    read_url: str | None = None,
    policy: CallerPolicy | None = None,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
    database_type: type[Database] = Database,
) -> App:
    """A ready-to-start server on `database_url` (and `read_url` for reads) bound as configured;
    its pools open when it starts and close when it stops. Tracing is on with
    `tracer_provider`, or with an OTLP endpoint configured; `database_type` makes the serving
    pools (tests and the benchmark observe their statements; ignored when tracing)."""
    if tracer_provider is None and settings.otel_exporter_otlp_endpoint:
        tracer_provider = otlp_tracer_provider(settings.otel_exporter_otlp_endpoint)
    tracer = tracer_provider.get_tracer(TRACER_NAME) if tracer_provider else None
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                deadline_ceiling=settings.default_deadline,
                max_calls=settings.max_concurrent_rpcs,
                max_streams=settings.watch_max_streams,
                policy=policy,
                metrics=metrics,
                access_log=settings.access_log,
                # They carry no tenant: probes and grpcurl call them without one.
                tenantless_services=(HEALTH_SERVICE_NAME, reflection.SERVICE_NAME),
                tracer=tracer,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            # Lets `--workers` processes share one port; harmless for a single process.
            ("grpc.so_reuseport", 1),
        ],
    )

    def serving_pool(url: str) -> Database:
        if tracer is not None:
            return TracedDatabase(url, tracer=tracer, **_pool_options(settings))
        return database_type(url, **_pool_options(settings))

    database = serving_pool(database_url)
    read_database = serving_pool(read_url) if read_url else None
    if metrics is not None:
        metrics.watch_pool("primary", database)
        if read_database is not None:
            metrics.watch_pool("replica", read_database)
    # The watch reads the primary: the log's positions and the snapshots in list tokens are
    # the primary's (a replica's page snapshot names the same transactions).
    feed = ChangeFeed(
        Database(database_url, **_pool_options(settings, pool_size=1), role="watch"),
        database_url,
        poll_interval=settings.watch_poll_interval,
    )
    watcher = Watcher(
        feed,
        database,
        WatchSettings(
            buffer=settings.watch_buffer,
            bookmark_interval=settings.watch_bookmark_interval,
            max_age=settings.watch_max_age,
            initial_idle_timeout=settings.watch_initial_idle_timeout,
        ),
    )
    pb_grpc.add_SessionMonitoringServicer_to_server(
        SessionMonitoringService(database, read_database=read_database, watcher=watcher), server
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_documented_reflection(server, (SERVICE_NAME, HEALTH_SERVICE_NAME))
    port = _bind(server, settings)
    databases = (database,) if read_database is None else (database, read_database)
    maintenance = Database(database_url, **_pool_options(settings, pool_size=1), role="folder")
    return App(
        server,
        port,
        health_servicer,
        databases,
        settings.health_check_interval,
        maintenance,
        settings.counter_fold_interval,
        feed,
        settings.watch_retention,
        tracer_provider,
    )


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    address = settings.address
    try:
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            client_ca = (
                settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
            )
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            return server.add_secure_port(address, credentials)
        if not _is_loopback(address):
            logger.warning(
                "PLAINTEXT on non-loopback address %s: anyone on the network can read and "
                "forge calls; configure TLS_CERT_FILE and TLS_KEY_FILE",
                address,
            )
        return server.add_insecure_port(address)
    except OSError as error:
        raise StartupError(f"cannot read TLS file: {error}") from None
    except RuntimeError as error:
        raise StartupError(f"cannot listen on {address}: {error}") from None


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    settings: Settings,
    database_url: str,
    *,
    read_url: str | None = None,
    policy: CallerPolicy | None = None,
    metrics_port_offset: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: NOT_SERVING, in-flight calls finish, pools close."""
    metrics = None
    if settings.metrics_address is not None:
        metrics = Metrics()
        host, _, port = settings.metrics_address.rpartition(":")
        bound = metrics.serve(f"{host}:{int(port) + metrics_port_offset}")
        logger.info("metrics on http://%s:%d/metrics", host, bound)
    app = create_app(settings, database_url, read_url=read_url, policy=policy, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    host = settings.address.rsplit(":", 1)[0]
    logger.info(
        "serving %s on %s:%d (%s)",
        SERVICE_NAME,
        host,
        app.port,
        "TLS" if settings.tls_enabled else "plaintext",
    )
    try:
        await stop.wait()
        logger.info(
            "shutting down: draining in-flight calls for up to %.1fs", settings.grace_period
        )
    finally:
        await app.stop(settings.grace_period)
        logger.info("stopped")


def _pool_options(settings: Settings, *, pool_size: int | None = None) -> dict[str, Any]:
    return {
        "pool_size": pool_size or settings.db_pool_size,
        "pool_timeout": settings.db_pool_timeout,
        "connect_timeout": settings.db_connect_timeout,
        "statement_timeout": settings.default_deadline,
    }
