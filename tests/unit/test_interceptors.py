"""Which methods the interceptor wraps, and that it wraps each once: with a stand-in for the
server's method lookup (the chain itself is proven on a real server in
tests/integration/test_interceptor_chain.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from server.transport.interceptors import Handler, ServiceInterceptor

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Lookup:
    """The server's method lookup: `handlers` by method path, counting the lookups."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.lookups: list[str] = []

    async def __call__(self, details: grpc.HandlerCallDetails) -> Handler:
        self.lookups.append(details.method)
        return self.handlers.get(details.method)  # type: ignore[return-value]


async def _answer(request: Any, context: Any) -> Any:
    return request


async def _stream(request: Any, context: Any) -> AsyncIterator[Any]:
    yield request


def _sync(request: Any, context: Any) -> Any:
    return request


def _interceptor() -> ServiceInterceptor:
    return ServiceInterceptor(
        deadline_ceiling=30, max_calls=8, max_streams=8, tenantless_services=(HEALTH, REFLECTION)
    )


async def _resolve(interceptor: ServiceInterceptor, lookup: Lookup, method: str) -> Handler:
    continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]] = lookup
    return await interceptor.intercept_service(continuation, Details(method))


@pytest.mark.parametrize(
    "method", [f"/{HEALTH}/Check", f"/{HEALTH}/Watch", f"/{REFLECTION}/ServerReflectionInfo"]
)
async def test_the_tenantless_services_are_handed_back_as_they_are(method: str) -> None:
    handler = grpc.unary_unary_rpc_method_handler(_answer)
    assert await _resolve(_interceptor(), Lookup({method: handler}), method) is handler


@pytest.mark.parametrize(
    ("method", "handler"),
    [
        ("/sessionmonitoring.v1.SessionMonitoring/ListSessions", _answer),
        ("/sessionmonitoring.v1.SessionMonitoring/WatchSessions", _stream),
        ("/sessionmonitoring.v2.SessionMonitoring/ListSessions", _answer),
        ("/acme.reports.v1.Reports/Export", _stream),
    ],
    ids=["our-rpc", "a-new-rpc-of-ours", "a-new-version", "any-other-service"],
)
async def test_every_other_method_is_wrapped_without_being_listed(
    method: str, handler: Callable[..., Any]
) -> None:
    registered = (
        grpc.unary_stream_rpc_method_handler(handler)
        if handler is _stream
        else grpc.unary_unary_rpc_method_handler(handler)
    )
    resolved = await _resolve(_interceptor(), Lookup({method: registered}), method)
    assert resolved is not registered
    assert (resolved.request_streaming, resolved.response_streaming) == (
        registered.request_streaming,
        registered.response_streaming,
    )
    assert resolved.unary_unary is not handler
    assert resolved.unary_stream is not handler


async def test_a_method_is_looked_up_and_wrapped_once() -> None:
    method = "/sessionmonitoring.v1.SessionMonitoring/ListSessions"
    lookup = Lookup({method: grpc.unary_unary_rpc_method_handler(_answer)})
    interceptor = _interceptor()
    first = await _resolve(interceptor, lookup, method)
    assert await _resolve(interceptor, lookup, method) is first
    assert lookup.lookups == [method]


async def test_a_method_the_server_does_not_have_stays_unknown_and_is_not_remembered() -> None:
    # Callers choose method names freely: remembering each would let them grow memory at will.
    lookup = Lookup({})
    interceptor = _interceptor()
    for _ in range(2):
        assert await _resolve(interceptor, lookup, "/made.Up/Name") is None
    assert lookup.lookups == ["/made.Up/Name", "/made.Up/Name"]


@pytest.mark.parametrize(
    "registered",
    [
        grpc.unary_unary_rpc_method_handler(_sync),
        grpc.unary_stream_rpc_method_handler(_sync),
        grpc.unary_unary_rpc_method_handler(_stream),
    ],
    ids=["sync-unary", "sync-stream", "generator-for-one-answer"],
)
async def test_a_handler_the_chain_cannot_run_is_refused_rather_than_served_unguarded(
    registered: Handler,
) -> None:
    method = "/sessionmonitoring.v1.SessionMonitoring/Broken"
    with pytest.raises(TypeError, match="Broken"):
        await _resolve(_interceptor(), Lookup({method: registered}), method)
