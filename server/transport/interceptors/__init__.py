"""The server interceptor of our services. Every call of every method, unary or streaming in
either direction, runs through one chain of small pieces, composed once per method:

    request id → tracing → access log and metrics → error mapping → concurrency → caller and
    tenant → deadline → handler

- `request_ids`: takes or makes the request id, tags every log line, returns it in the trailers;
- `tracing`: with tracing on, a span per call that continues the caller's `traceparent`;
- `access_log`: one access line and one set of metric updates per call, with its final code
  (CANCELLED when the client cancels);
- `error_mapping`: every exception, raised before the first message or mid-stream, becomes a
  precise status with google.rpc.Status details and the request id;
- `concurrency`: at most MAX_CONCURRENT_RPCS unary calls and WATCH_MAX_STREAMS streams at
  once, counted apart (grpc's own limit would count open watches against every call, health
  probes included);
- `caller_tenant`: with a caller policy, identifies the caller and checks it may act for the
  tenant named by `x-tenant-id`; binds that tenant for the handler;
- `deadlines`: unary calls end at the caller's deadline or the server's ceiling, streaming calls
  at the caller's deadline only, cancelling the handler and its database work.

Which methods: all of them except those of the services named tenantless (health and
reflection, which carry no tenant), so a new RPC or service is covered without being listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.trace import Tracer

from server.observability import Metrics
from server.transport.auth import CallerPolicy
from server.transport.interceptors.access_log import AccessLogAndMetrics
from server.transport.interceptors.caller_tenant import CallerAndTenant
from server.transport.interceptors.chain import Layer, Method, compose
from server.transport.interceptors.concurrency import Concurrency
from server.transport.interceptors.deadlines import Deadline
from server.transport.interceptors.error_mapping import ErrorMapping
from server.transport.interceptors.request_ids import RequestIds
from server.transport.interceptors.tracing import Tracing

__all__ = ["SERVICE_PREFIX", "Handler", "ServiceInterceptor"]

SERVICE_PREFIX = "/sessionmonitoring.v1.SessionMonitoring/"

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler


class ServiceInterceptor(_ServerInterceptor):
    """Puts every method of our services behind the chain (see the module docstring)."""

    def __init__(
        self,
        *,
        deadline_ceiling: float,
        max_calls: int,
        max_streams: int,
        policy: CallerPolicy | None = None,
        metrics: Metrics | None = None,
        access_log: bool = True,
        tenantless_services: Iterable[str] = (),
        tracer: Tracer | None = None,
    ) -> None:
        self._entry = RequestIds()
        # Outermost first: the access log sees the code error mapping chose, error mapping sees
        # the caller and tenant refusals, and the deadline bounds the handler alone.
        self._layers: tuple[Layer, ...] = (
            Tracing(tracer),
            AccessLogAndMetrics(metrics=metrics, access_log=access_log),
            ErrorMapping(),
            Concurrency(calls=max_calls, streams=max_streams),
            CallerAndTenant(policy),
            Deadline(deadline_ceiling),
        )
        self._tenantless = frozenset(tenantless_services)
        # Handlers are wrapped once per method, not once per call. Only methods the server
        # knows are kept: names callers make up resolve to nothing and are not remembered.
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is not None:
            return handler
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if _service(path) not in self._tenantless:
            handler = self._wrap(path, handler)
        self._handlers[path] = handler
        return handler

    def _wrap(self, path: str, handler: Handler) -> Handler:
        method = Method(
            path=path,
            name=path.removeprefix(SERVICE_PREFIX).removeprefix("/"),
            request_streaming=handler.request_streaming,
            response_streaming=handler.response_streaming,
        )
        serializer = handler.response_serializer
        if method.response_streaming and serializer is not None:
            serializer = _passing_bytes(serializer)
        codecs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": serializer,
        }
        if handler.unary_unary is not None:
            chain = compose(method, handler.unary_unary, self._entry, self._layers)
            return grpc.unary_unary_rpc_method_handler(chain, **codecs)
        if handler.unary_stream is not None:
            chain = compose(method, handler.unary_stream, self._entry, self._layers)
            return grpc.unary_stream_rpc_method_handler(chain, **codecs)
        if handler.stream_unary is not None:
            chain = compose(method, handler.stream_unary, self._entry, self._layers)
            return grpc.stream_unary_rpc_method_handler(chain, **codecs)
        if handler.stream_stream is not None:
            chain = compose(method, handler.stream_stream, self._entry, self._layers)
            return grpc.stream_stream_rpc_method_handler(chain, **codecs)
        raise TypeError(f"{path}: the method handler has no behavior")


def _passing_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A streaming method's serializer that also takes a response already serialized: an event
    sent on many streams is encoded once (server.transport.watch_stream)."""

    def serialized(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serialized


def _service(path: str) -> str:
    """`package.Service` of `/package.Service/Method`."""
    return path[1:].rpartition("/")[0]
