"""A span per call (OpenTelemetry), continuing the caller's W3C `traceparent` when it sends
one; the database statements the call runs are its children (server.data.statements). Left out
of the chain entirely when tracing is off."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.transport.interceptors.chain import Call, Context, Method, Next

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """Wraps each call in a server span named like the method (`package.Service/Method`)."""

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that traces `inner`, or `inner` itself when tracing is off."""
        tracer = self._tracer
        if tracer is None:
            return inner
        name = method.path.removeprefix("/")
        service, _, rpc = name.rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        async def traced(request: Any, context: Context, call: Call) -> Any:
            carrier = {key: value for key, value in call.metadata if isinstance(value, str)}
            with tracer.start_as_current_span(
                name,
                context=_PROPAGATOR.extract(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,  # error mapping reports failures; stack traces stay ours
                set_status_on_exception=False,
            ) as span:
                try:
                    return await inner(request, context, call)
                finally:
                    span.set_attribute("rpc.grpc.status_code", call.code.value[0])
                    span.set_attribute("sessionmonitoring.request_id", call.request_id)
                    span.set_attribute("sessionmonitoring.tenant", call.tenant)
                    if call.code is not grpc.StatusCode.OK:
                        span.set_status(Status(StatusCode.ERROR, call.code.name))

        return traced
