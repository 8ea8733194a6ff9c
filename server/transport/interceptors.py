"""Server interceptor for the SessionMonitoring service. Around every call it:

- takes or makes the request id, returns it in trailing metadata and tags every log line;
- identifies the caller and checks it may act for the tenant (when a caller policy is on);
- binds the tenant from `x-tenant-id`;
- bounds the call by the caller's deadline, or the server's ceiling when none is set, so the
  database work is cancelled when the time is up;
- turns every exception into a precise status with google.rpc.Status details;
- writes the access log line and the metrics.

Health and reflection are not wrapped: they carry no tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_status import rpc_status

from server.data.engine import is_unavailable
from server.data.statements import PoolExhaustedError
from server.observability import (
    REQUEST_ID_METADATA_KEY,
    Metrics,
    bind_request_id,
    request_id_from,
)
from server.transport.auth import AUTHORIZATION_METADATA_KEY, CallerPolicy
from server.transport.errors import (
    DatabaseBusyError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    InternalError,
    ServiceError,
    TenantNotAllowedError,
    to_rpc_status,
)
from server.transport.tenancy import bind_tenant, tenant_from_metadata, unbind_tenant

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("server.access")

SERVICE_PREFIX = "/sessionmonitoring.v1.SessionMonitoring/"
_CERTIFICATE_IDENTITY_KEYS = ("x509_common_name", "x509_subject_alternative_name")

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
Metadata = Sequence[tuple[str, str | bytes]]

if TYPE_CHECKING:  # grpc-stubs makes the interceptor generic; the runtime class is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class ServiceInterceptor(_ServerInterceptor):
    """Request ids, caller policy, tenant, deadline, errors, access log and metrics."""

    def __init__(
        self,
        *,
        deadline_ceiling: float,
        policy: CallerPolicy | None = None,
        metrics: Metrics | None = None,
        access_log: bool = True,
    ) -> None:
        self._deadline_ceiling = deadline_ceiling
        self._policy = policy
        self._metrics = metrics
        self._access_log = access_log
        # Wrapped handlers are built once per method, not once per call.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(SERVICE_PREFIX) or not handler.unary_unary:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._guarded(cast(Behavior, handler.unary_unary), method.removeprefix(SERVICE_PREFIX)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _guarded(self, behavior: Behavior, method: str) -> Behavior:
        async def guarded(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            metadata = cast(Metadata, tuple(context.invocation_metadata() or ()))
            request_id = request_id_from(_first(metadata, REQUEST_ID_METADATA_KEY))
            bind_request_id(request_id)
            outcome = _Outcome()
            if self._metrics:
                self._metrics.in_flight.inc()
            try:
                return await self._serve(behavior, request, context, metadata, request_id, outcome)
            except asyncio.CancelledError:
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._record(method, context, outcome, request_id, time.perf_counter() - started)

        return guarded

    async def _serve(
        self,
        behavior: Behavior,
        request: Any,
        context: Context,
        metadata: Metadata,
        request_id: str,
        outcome: _Outcome,
    ) -> Any:
        deadline_hit = False
        try:
            self._authorize(metadata, context, outcome)
            token = bind_tenant(outcome.tenant)
            try:
                remaining = context.time_remaining()
                budget = self._deadline_ceiling
                if remaining is not None:
                    budget = min(budget, max(remaining, 0.0))
                async with asyncio.timeout(budget) as scope:
                    try:
                        response = await behavior(request, context)
                    finally:
                        deadline_hit = scope.expired()
            finally:
                unbind_tenant(token)
        except grpc.aio.AbortError:
            raise
        except ServiceError as error:
            failure = error
        except TimeoutError as error:
            failure = DeadlineExceededError() if deadline_hit else _classify(error)
        except Exception as error:
            failure = _classify(error)
        else:
            context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
            return response
        outcome.code, outcome.reason = failure.code, failure.reason
        status = rpc_status.to_status(to_rpc_status(failure, request_id=request_id))
        await context.abort(
            status.code,
            status.details,
            trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_METADATA_KEY, request_id)),
        )

    def _authorize(self, metadata: Metadata, context: Context, outcome: _Outcome) -> None:
        caller = None
        if self._policy is not None:
            authorization = _first(metadata, AUTHORIZATION_METADATA_KEY)
            caller = self._policy.identify(
                authorization=authorization if isinstance(authorization, str) else None,
                identities=_certificate_identities(context),
            )
            outcome.caller = caller.name
        outcome.tenant = tenant_from_metadata(metadata)
        if caller is not None and not caller.may_act_for(outcome.tenant):
            raise TenantNotAllowedError()

    def _record(
        self, method: str, context: Context, outcome: _Outcome, request_id: str, seconds: float
    ) -> None:
        if self._metrics:
            self._metrics.in_flight.dec()
            self._metrics.calls.labels(method, outcome.code.name).inc()
            self._metrics.duration.labels(method).observe(seconds)
            if outcome.reason:
                self._metrics.errors.labels(method, outcome.reason).inc()
                if outcome.reason == DatabaseBusyError.reason:
                    self._metrics.pool_waits.inc()
        if self._access_log and access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "%s tenant=%s code=%s %.1fms peer=%s caller=%s",
                method,
                outcome.tenant,
                outcome.code.name,
                seconds * 1000,
                context.peer(),
                outcome.caller,
                extra={
                    "method": method,
                    "tenant": outcome.tenant,
                    "code": outcome.code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "peer": context.peer(),
                    "caller": outcome.caller,
                    "request_id": request_id,
                },
            )


class _Outcome:
    """What the access log and metrics say about one call."""

    __slots__ = ("caller", "code", "reason", "tenant")

    def __init__(self) -> None:
        self.tenant = "-"
        self.caller = "-"
        self.code = grpc.StatusCode.OK
        self.reason = ""


def _first(metadata: Metadata, key: str) -> str | bytes | None:
    return next((value for k, value in metadata if k == key), None)


def _certificate_identities(context: Context) -> list[str]:
    auth = context.auth_context()
    return [
        value.decode(errors="replace")
        for key in _CERTIFICATE_IDENTITY_KEYS
        for value in auth.get(key, ())
    ]


def _classify(error: Exception) -> ServiceError:
    """The status for an unexpected exception; internals go to the log, never to the caller."""
    if isinstance(error, PoolExhaustedError):
        logger.warning("no database connection free within the pool timeout")
        return DatabaseBusyError()
    if is_unavailable(error):
        logger.warning("database unavailable: %s", error.__class__.__name__)
        return DatabaseUnavailableError()
    incident = uuid.uuid4().hex
    logger.exception("internal error (incident %s)", incident)
    return InternalError(metadata={"incident_id": incident})
