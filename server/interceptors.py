"""Server interceptor for the SessionMonitoring service: binds the caller's tenant and turns
every exception into a precise gRPC status with google.rpc.Status details.

Health and reflection are not wrapped: they carry no tenant.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_status import rpc_status

from server.db.engine import is_unavailable
from server.errors import DatabaseUnavailableError, InternalError, ServiceError, to_rpc_status
from server.tenancy import bind_tenant, tenant_from_metadata, unbind_tenant

logger = logging.getLogger(__name__)

SERVICE_PREFIX = "/sessionmonitoring.v1.SessionMonitoring/"

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


if TYPE_CHECKING:  # grpc-stubs makes the interceptor generic; the runtime class is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class ServiceInterceptor(_ServerInterceptor):
    """Tenant binding and error translation around every SessionMonitoring RPC."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SERVICE_PREFIX) or not handler.unary_unary:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guarded(cast(Behavior, handler.unary_unary), method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _guarded(behavior: Behavior, method: str) -> Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            tenant = tenant_from_metadata(list(context.invocation_metadata() or ()))
            token = bind_tenant(tenant)
            try:
                return await behavior(request, context)
            finally:
                unbind_tenant(token)
        except grpc.aio.AbortError:
            raise
        except ServiceError as error:
            failure = error
        except Exception as error:
            failure = _classify(error, method)
        status = rpc_status.to_status(to_rpc_status(failure))
        await context.abort_with_status(status)  # type: ignore[attr-defined]  # missing in grpc-stubs

    return guarded


def _classify(error: Exception, method: str) -> ServiceError:
    """The status for an unexpected exception; internals go to the log, never to the caller."""
    if is_unavailable(error):
        logger.warning("database unavailable during %s: %s", method, error.__class__.__name__)
        return DatabaseUnavailableError()
    incident = uuid.uuid4().hex
    logger.exception("internal error in %s (incident %s)", method, incident)
    return InternalError(metadata={"incident_id": incident})
