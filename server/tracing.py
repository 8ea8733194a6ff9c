"""OpenTelemetry tracing, off unless an OTLP endpoint is configured: a span per call, the
database statements as its children, exported in batches to an OTLP/gRPC collector."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TRACER_NAME = "sessionmonitoring"


def otlp_tracer_provider(endpoint: str) -> TracerProvider:
    """A provider that exports to the collector at `endpoint` (`http://host:4317`; plaintext
    for http, TLS for https)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "sessionmonitoring"}))
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
