"""Request ids, the access log, JSON log lines and the Prometheus /metrics endpoint, end to end."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any, cast

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.statements import Database
from server.observability import Metrics
from server.transport import errors
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving

REQUEST_ID_KEY = "x-request-id"
GENERATED_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
SERVING_LINE = re.compile(rb"serving sessionmonitoring\.v1\.SessionMonitoring on [\d.]+:(\d+)")
ACCESS_FIELDS = ("method", "tenant", "code", "request_id", "duration_ms", "peer")
PROCESS_TIMEOUT = 30.0


def _trailing_request_id(trailing: Iterable[Any] | None) -> str:
    # grpc-stubs types metadata items as objects with .key/.value; at runtime they are tuples.
    items = cast(Iterable[tuple[str, str | bytes]], trailing or ())
    values = [value for key, value in items if key == REQUEST_ID_KEY]
    assert len(values) == 1, f"expected one {REQUEST_ID_KEY} in trailing metadata: {values}"
    assert isinstance(values[0], str)
    return values[0]


def _with_request_id(tenant: str, request_id: str) -> list[tuple[str, str]]:
    return [*tenant_metadata(tenant), (REQUEST_ID_KEY, request_id)]


async def _list_request_id(
    stub: pb_grpc.SessionMonitoringStub, metadata: list[tuple[str, str]]
) -> str:
    call = stub.ListSessions(pb.ListSessionsRequest(), metadata=metadata)
    await call
    return _trailing_request_id(await call.trailing_metadata())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _scrape(port: int) -> str:
    def fetch() -> str:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return cast(bytes, response.read()).decode()

    return await asyncio.to_thread(fetch)


def _sample(exposition: str, name: str, **labels: str) -> float:
    """The value of sample `name` whose labels include `labels` (0 when it was never set)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


# --- request ids ---------------------------------------------------------------------------


async def test_a_caller_request_id_comes_back_in_trailing_metadata(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    assert await _list_request_id(stub, _with_request_id(tenant, "abc-123")) == "abc-123"


async def test_a_failed_call_returns_the_request_id_in_trailers_and_error_info(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="missing"),
            metadata=_with_request_id(tenant, "abc-123"),
        )
    assert failure(raised.value).reason == errors.REASON_SESSION_NOT_FOUND
    assert failure(raised.value).request_id == "abc-123"
    assert _trailing_request_id(raised.value.trailing_metadata()) == "abc-123"


async def test_a_call_without_request_id_gets_a_generated_one(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    first = await _list_request_id(stub, tenant_metadata(tenant))
    second = await _list_request_id(stub, tenant_metadata(tenant))
    assert GENERATED_REQUEST_ID.fullmatch(first)
    assert GENERATED_REQUEST_ID.fullmatch(second)
    assert first != second


async def test_a_validation_failure_without_request_id_carries_a_generated_one(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSessions(
            pb.ListSessionsRequest(page_size=1000), metadata=tenant_metadata(tenant)
        )
    details = failure(raised.value)
    assert details.reason == errors.REASON_INVALID_ARGUMENT
    assert GENERATED_REQUEST_ID.fullmatch(details.request_id)
    assert _trailing_request_id(raised.value.trailing_metadata()) == details.request_id


@pytest.mark.parametrize(
    "malformed", ["has spaces in it", "x" * 200, "semi;colon", "slash/inside"], ids=str.__len__
)
async def test_a_malformed_request_id_is_replaced_by_a_generated_one(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, malformed: str
) -> None:
    echoed = await _list_request_id(stub, _with_request_id(tenant, malformed))
    assert echoed != malformed
    assert GENERATED_REQUEST_ID.fullmatch(echoed)


async def test_a_request_id_of_the_longest_allowed_length_is_kept(
    stub: pb_grpc.SessionMonitoringStub, tenant: str
) -> None:
    longest = "r" * 128
    assert await _list_request_id(stub, _with_request_id(tenant, longest)) == longest


# --- access log ----------------------------------------------------------------------------


def _access_records(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "server.access" and getattr(record, "request_id", None) == request_id
    ]


async def test_the_access_log_records_the_call_with_its_request_id(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    request_id = f"req-{uuid.uuid4().hex}"
    await stub.ListSessions(pb.ListSessionsRequest(), metadata=_with_request_id(tenant, request_id))
    [record] = _access_records(caplog, request_id)
    fields: dict[str, Any] = record.__dict__
    assert fields["method"] == "ListSessions"
    assert fields["tenant"] == tenant
    assert fields["code"] == "OK"
    assert isinstance(fields["duration_ms"], float)
    assert fields["duration_ms"] >= 0
    assert fields["peer"].startswith("ipv4:127.0.0.1:")


async def test_the_access_log_records_a_failed_call_with_its_code(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    request_id = f"req-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="missing"),
            metadata=_with_request_id(tenant, request_id),
        )
    [record] = _access_records(caplog, request_id)
    assert record.__dict__["method"] == "GetSessionDetail"
    assert record.__dict__["tenant"] == tenant
    assert record.__dict__["code"] == "NOT_FOUND"


async def test_the_access_log_of_a_status_update_names_the_session_and_the_status(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await factory.session(tenant, "s 1")
    caplog.set_level(logging.INFO, logger="server.access")
    request_id = f"req-{uuid.uuid4().hex}"
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s 1", status=pb.SESSION_STATUS_CLOSED),
        metadata=_with_request_id(tenant, request_id),
    )
    [record] = _access_records(caplog, request_id)
    assert record.__dict__["session"] == "s 1"
    assert record.__dict__["status"] == "closed"
    assert record.getMessage().endswith(' session="s 1" status="closed"')


async def test_the_access_log_carries_the_generated_request_id_the_caller_received(
    stub: pb_grpc.SessionMonitoringStub, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    request_id = await _list_request_id(stub, tenant_metadata(tenant))
    assert len(_access_records(caplog, request_id)) == 1


async def test_the_access_log_never_contains_message_content(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    await factory.session(tenant, "s-1", metadata={"note": secret})
    await factory.message(tenant, "s-1", content=secret)
    caplog.set_level(logging.DEBUG)
    request_id = f"req-{uuid.uuid4().hex}"
    await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="s-1"), metadata=_with_request_id(tenant, request_id)
    )
    assert len(_access_records(caplog, request_id)) == 1
    assert secret not in caplog.text


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_count_calls_errors_and_latency_and_report_the_pool(
    database_url: str, factory: Factory, tenant: str
) -> None:
    pool_size = 3
    metrics = Metrics()
    async with serving(database_url, metrics=metrics, db_pool_size=pool_size) as app:
        port = await asyncio.to_thread(metrics.serve, "127.0.0.1:0")
        before = await _scrape(port)
        await factory.session(tenant, "s-1")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.SessionMonitoringStub(channel)
            md = tenant_metadata(tenant)
            for _ in range(3):
                await stub.ListSessions(pb.ListSessionsRequest(), metadata=md)
            await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-1"), metadata=md)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.GetSessionDetail(
                        pb.GetSessionDetailRequest(session_id="missing"), metadata=md
                    )
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.ListSessions(pb.ListSessionsRequest(page_size=1000), metadata=md)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = await _scrape(port)

    def moved(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    calls = "sessionmonitoring_rpc_calls_total"
    assert moved(calls, method="ListSessions", code="OK") == 3
    assert moved(calls, method="ListSessions", code="INVALID_ARGUMENT") == 1
    assert moved(calls, method="GetSessionDetail", code="OK") == 1
    assert moved(calls, method="GetSessionDetail", code="NOT_FOUND") == 2
    assert moved(calls, method="UpdateSessionStatus", code="OK") == 0

    duration = "sessionmonitoring_rpc_duration_seconds_count"
    assert moved(duration, method="ListSessions") == 4
    assert moved(duration, method="GetSessionDetail") == 3
    # Every observation falls in the +Inf bucket, so it agrees with the count.
    assert (
        moved("sessionmonitoring_rpc_duration_seconds_bucket", method="ListSessions", le="+Inf")
        == 4
    )

    failures = "sessionmonitoring_rpc_errors_total"
    assert moved(failures, method="GetSessionDetail", reason=errors.REASON_SESSION_NOT_FOUND) == 2
    assert moved(failures, method="ListSessions", reason=errors.REASON_INVALID_ARGUMENT) == 1

    assert _sample(after, "sessionmonitoring_rpc_in_flight") == 0
    assert _sample(after, "sessionmonitoring_db_pool_size", pool="primary") == pool_size
    # Nothing is checked out between calls.
    assert _sample(after, "sessionmonitoring_db_pool_in_use", pool="primary") == 0


async def test_metrics_show_a_call_in_flight_and_its_connection_in_use_while_it_waits(
    database_url: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    metrics = Metrics()
    await factory.session(tenant, "held")
    async with serving(database_url, metrics=metrics, db_pool_size=2) as app:
        port = await asyncio.to_thread(metrics.serve, "127.0.0.1:0")
        async with (
            engine.connect() as blocker,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            # Our row lock keeps the server's UPDATE waiting, so the call stays in flight.
            await blocker.execute(
                text("SELECT 1 FROM chat_sessions WHERE tenant_id = :t FOR UPDATE"),
                {"t": tenant},
            )
            call = asyncio.ensure_future(
                pb_grpc.SessionMonitoringStub(channel).UpdateSessionStatus(
                    pb.UpdateSessionStatusRequest(
                        session_id="held", status=pb.SESSION_STATUS_CLOSED
                    ),
                    metadata=tenant_metadata(tenant),
                )
            )
            await _wait_for_lock_waiter(engine)
            during = await _scrape(port)
            await blocker.rollback()
            assert (await call).session.status == pb.SESSION_STATUS_CLOSED
        after = await _scrape(port)
    assert _sample(during, "sessionmonitoring_rpc_in_flight") == 1
    assert _sample(during, "sessionmonitoring_db_pool_in_use", pool="primary") == 1
    assert _sample(after, "sessionmonitoring_rpc_in_flight") == 0
    assert _sample(after, "sessionmonitoring_db_pool_in_use", pool="primary") == 0
    assert (
        _sample(after, "sessionmonitoring_rpc_calls_total", method="UpdateSessionStatus", code="OK")
        == 1
    )


async def _wait_for_lock_waiter(engine: AsyncEngine) -> None:
    """Until a server connection in this database is blocked on a lock."""
    async with asyncio.timeout(PROCESS_TIMEOUT):
        while True:
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name = 'sessionmonitoring' "
                        "AND datname = current_database() AND query LIKE '%UPDATE chat_sessions%'"
                    )
                )
            if waiting:
                return
            await asyncio.sleep(0.05)


async def test_metric_names_follow_prometheus_conventions(database_url: str) -> None:
    metrics = Metrics()
    metrics.watch_pool(
        "primary", Database(database_url, pool_size=1, pool_timeout=5, connect_timeout=5)
    )
    port = await asyncio.to_thread(metrics.serve, "127.0.0.1:0")
    exposition = await _scrape(port)
    families = {family.name: family.type for family in text_string_to_metric_families(exposition)}
    assert families["sessionmonitoring_rpc_calls"] == "counter"
    assert families["sessionmonitoring_rpc_errors"] == "counter"
    assert families["sessionmonitoring_db_pool_timeouts"] == "counter"
    assert families["sessionmonitoring_rpc_duration_seconds"] == "histogram"
    assert families["sessionmonitoring_rpc_in_flight"] == "gauge"
    assert families["sessionmonitoring_db_pool_size"] == "gauge"
    assert "# TYPE sessionmonitoring_rpc_calls_total counter" in exposition
    assert all(name.startswith("sessionmonitoring_") for name in families)


async def test_metrics_count_a_call_that_has_no_tenant(database_url: str) -> None:
    metrics = Metrics()
    async with serving(database_url, metrics=metrics, db_pool_size=1) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.SessionMonitoringStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListSessions(pb.ListSessionsRequest())
        port = await asyncio.to_thread(metrics.serve, "127.0.0.1:0")
        exposition = await _scrape(port)
    code = raised.value.code().name
    assert failure(raised.value).reason == errors.REASON_MISSING_TENANT_ID
    assert (
        _sample(exposition, "sessionmonitoring_rpc_calls_total", method="ListSessions", code=code)
        == 1
    )
    assert (
        _sample(
            exposition,
            "sessionmonitoring_rpc_errors_total",
            method="ListSessions",
            reason=errors.REASON_MISSING_TENANT_ID,
        )
        == 1
    )
    assert _sample(exposition, "sessionmonitoring_rpc_in_flight") == 0


# --- the real process: JSON logs and --metrics-address -------------------------------------


async def test_the_process_logs_json_lines_and_serves_metrics(
    database_url: str, tenant: str
) -> None:
    metrics_port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": "127.0.0.1:0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--log-format",
        "json",
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
        "--db-pool-size",
        "4",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    log = bytearray()
    try:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            while (match := SERVING_LINE.search(log)) is None:
                line = await process.stdout.readline()
                assert line, f"server exited before serving: {log.decode(errors='replace')}"
                log += line
        request_id = f"json-{uuid.uuid4().hex}"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{match.group(1).decode()}") as channel:
            stub = pb_grpc.SessionMonitoringStub(channel)
            await stub.ListSessions(
                pb.ListSessionsRequest(), metadata=_with_request_id(tenant, request_id)
            )
        exposition = await _scrape(metrics_port)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(PROCESS_TIMEOUT):
            log += await process.stdout.read()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert (
        _sample(exposition, "sessionmonitoring_rpc_calls_total", method="ListSessions", code="OK")
        == 1
    )
    assert _sample(exposition, "sessionmonitoring_db_pool_size", pool="primary") == 4

    lines = log.decode().splitlines()
    assert lines
    entries: list[dict[str, Any]] = []
    for logged in lines:
        entry = json.loads(logged)
        assert isinstance(entry, dict), logged
        entries.append(entry)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    [access] = [entry for entry in entries if entry.get("request_id") == request_id]
    assert access["logger"] == "server.access"
    assert all(field in access for field in ACCESS_FIELDS)
    assert access["method"] == "ListSessions"
    assert access["tenant"] == tenant
    assert access["code"] == "OK"
    assert access["peer"].startswith("ipv4:127.0.0.1:")
    assert any("shutting down" in entry["message"] for entry in entries)
