"""OpenTelemetry tracing: off by default; when on, a server span per call that continues the
caller's W3C `traceparent`, with the call's SQL statements as child spans (text, never values).
Spans are caught by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.app import App, create_app
from server.config import load_settings
from server.data.statements import TracedDatabase
from tests.factories import Factory, tenant_metadata

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(database_url: str, exporter: InMemorySpanExporter) -> AsyncIterator[App]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(load_settings(address="127.0.0.1:0"), database_url, tracer_provider=provider)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


async def test_a_call_is_a_server_span_continuing_the_callers_trace_with_its_statements(
    traced: App, exporter: InMemorySpanExporter, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s-1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{traced.port}") as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="s-1"),
            metadata=(*tenant_metadata(tenant), ("traceparent", TRACEPARENT)),
        )
    spans = exporter.get_finished_spans()
    [call] = [span for span in spans if span.kind is SpanKind.SERVER]
    assert call.name == "sessionmonitoring.v1.SessionMonitoring/GetSessionDetail"
    assert format(call.context.trace_id, "032x") == TRACE_ID
    assert call.parent is not None
    assert format(call.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert call.attributes["sessionmonitoring.tenant"] == tenant
    statements = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert statements
    for statement in statements:
        assert statement.parent is not None
        assert statement.parent.span_id == call.context.span_id
        assert statement.attributes is not None
        assert statement.attributes["db.system"] == "postgresql"
        sql = str(statement.attributes["db.statement"])
        assert "chat_sessions" in sql
        assert tenant not in sql  # values are bound, never recorded


async def test_a_failed_call_is_an_error_span_with_its_code(
    traced: App, exporter: InMemorySpanExporter, tenant: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{traced.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.SessionMonitoringStub(channel).GetSessionDetail(
                pb.GetSessionDetailRequest(session_id="missing"), metadata=tenant_metadata(tenant)
            )
    [call] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "NOT_FOUND"
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert call.parent is None  # no traceparent: a trace of its own


async def test_tracing_is_off_by_default(database_url: str) -> None:
    app = create_app(load_settings(address="127.0.0.1:0"), database_url)
    try:
        assert app.tracer_provider is None
        assert not any(isinstance(database, TracedDatabase) for database in app.databases)
    finally:
        await app.stop(0)
