"""One access log line and one set of metric updates per call (not per message), with the
call's final code: calls by code, duration, in flight, errors by reason."""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

import grpc
from prometheus_client import Counter

from server.observability import Metrics
from server.transport.errors import DatabaseBusyError, quoted
from server.transport.interceptors.chain import Call, Context, Method, Next

access_logger = logging.getLogger("server.access")
_current_call: ContextVar[Call | None] = ContextVar("current_call", default=None)


def note(**fields: str) -> None:
    """Add `fields` (which session, which status: never content) to this call's access line."""
    call = _current_call.get()
    if call is not None:
        call.notes = (*call.notes, *fields.items())


class AccessLogAndMetrics:
    """Reports every call once it has ended, however it ended."""

    def __init__(self, *, metrics: Metrics | None, access_log: bool) -> None:
        self._metrics = metrics
        self._access_log = access_log

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that times `inner` and reports it."""
        if self._metrics is None and not self._access_log:
            return inner  # nothing to report: no clock, no extra step
        counted = _MethodMetrics(self._metrics, method.name) if self._metrics else None
        logged = method.name if self._access_log else None

        async def reported(request: Any, context: Context, call: Call) -> Any:
            started = time.perf_counter()
            if counted is not None:
                counted.started()
            if logged is not None:
                _current_call.set(call)  # the handler runs in this context: it may add notes
            try:
                return await inner(request, context, call)
            except asyncio.CancelledError:
                if call.code is grpc.StatusCode.OK:  # unless a piece knows better (a deadline)
                    call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                seconds = time.perf_counter() - started
                if counted is not None:
                    counted.ended(call, seconds)
                if logged is not None and access_logger.isEnabledFor(logging.INFO):
                    _log(logged, context, call, seconds)

        return reported


class _MethodMetrics:
    """One method's metrics; their labelled children are looked up once, not on every call."""

    __slots__ = ("_calls", "_duration", "_errors", "_metrics", "_name")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self._duration = metrics.duration.labels(name)
        self._calls: dict[grpc.StatusCode, Counter] = {}
        self._errors: dict[str, Counter] = {}  # reasons are class constants: a bounded set

    def started(self) -> None:
        self._metrics.in_flight.inc()

    def ended(self, call: Call, seconds: float) -> None:
        metrics = self._metrics
        metrics.in_flight.dec()
        calls = self._calls.get(call.code)
        if calls is None:
            calls = self._calls[call.code] = metrics.calls.labels(self._name, call.code.name)
        calls.inc()
        self._duration.observe(seconds)
        if call.reason:
            errors = self._errors.get(call.reason)
            if errors is None:
                errors = self._errors[call.reason] = metrics.errors.labels(self._name, call.reason)
            errors.inc()
            if call.reason == DatabaseBusyError.reason:
                metrics.pool_waits.inc()


def _log(method: str, context: Context, call: Call, seconds: float) -> None:
    peer = context.peer()
    notes = "".join(f" {name}={quoted(value)}" for name, value in call.notes)
    access_logger.info(
        "%s tenant=%s code=%s %.1fms peer=%s caller=%s%s",
        method,
        call.tenant,
        call.code.name,
        seconds * 1000,
        peer,
        call.caller,
        notes,
        extra={
            **dict(call.notes),
            "method": method,
            "tenant": call.tenant,
            "code": call.code.name,
            "duration_ms": round(seconds * 1000, 3),
            "peer": peer,
            "caller": call.caller,
            "request_id": call.request_id,
        },
    )
