"""Server assembly and lifecycle: the gRPC server with its interceptor, health and reflection,
the database engine, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Imported at runtime behind a `sys.version_info[1]` check that mypy cannot evaluate.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from server.config import Settings
from server.db.engine import create_engine
from server.interceptors import ServiceInterceptor
from server.service import SessionMonitoringService

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SessionMonitoring"].full_name


class AddressInUseError(RuntimeError):
    """Raised when the gRPC address cannot be bound."""


def create_server(
    engine: AsyncEngine, *, address: str
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A ready-to-start server for `engine` bound to `address`; returns it, its port and its
    health servicer."""
    server = grpc.aio.server(interceptors=[ServiceInterceptor()])
    pb_grpc.add_SessionMonitoringServicer_to_server(SessionMonitoringService(engine), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise AddressInUseError(f"cannot listen on {address}: {error}") from None
    return server, port, health_servicer


async def set_serving(health_servicer: health_aio.HealthServicer, serving: bool) -> None:
    """Report every service (and the server as a whole, "") as SERVING or NOT_SERVING."""
    state = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, state)


async def serve(settings: Settings, database_url: str) -> None:
    """Serve until SIGTERM/SIGINT, then drain: NOT_SERVING, in-flight calls finish, pool closes."""
    engine = create_engine(
        database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
    )
    server, port, health_servicer = create_server(engine, address=settings.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await set_serving(health_servicer, True)
    host = settings.address.rsplit(":", 1)[0]
    logger.info("serving sessionmonitoring.v1.SessionMonitoring on %s:%d", host, port)
    try:
        await stop.wait()
        logger.info(
            "shutting down: draining in-flight calls for up to %.1fs", settings.grace_period
        )
        await set_serving(health_servicer, False)
    finally:
        await server.stop(settings.grace_period)
        await engine.dispose()
        logger.info("stopped")
