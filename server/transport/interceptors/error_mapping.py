"""Every failure, before the first message or mid-stream, ends the call with its precise status:
google.rpc.Status details (ErrorInfo with the request id, BadRequest for bad fields) and the
request id in the trailers. Unexpected exceptions become INTERNAL with an incident id; their
internals go to the log, never to the caller."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from grpc_status import rpc_status

from server.data.engine import is_unavailable
from server.data.statements import PoolExhaustedError
from server.observability import REQUEST_ID_METADATA_KEY
from server.transport.errors import (
    DatabaseBusyError,
    DatabaseUnavailableError,
    InternalError,
    ServiceError,
    to_rpc_status,
)
from server.transport.interceptors.chain import Call, Context, Method, Next

# The package's name (server.transport.interceptors), which operators' log filters know.
logger = logging.getLogger(__package__)


class ErrorMapping:
    """Turns the exception that ends a call into its status."""

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that maps what `inner` raises."""

        async def mapped(request: Any, context: Context, call: Call) -> Any:
            try:
                return await inner(request, context, call)
            except grpc.aio.AbortError:
                # The handler ended the call itself, with a code of its own.
                call.code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except ServiceError as error:
                failure = error
            except Exception as error:
                failure = classify(error)
            call.code, call.reason = failure.code, failure.reason
            status = rpc_status.to_status(to_rpc_status(failure, request_id=call.request_id))
            await context.abort(
                status.code,
                status.details,
                trailing_metadata=(
                    *status.trailing_metadata,
                    (REQUEST_ID_METADATA_KEY, call.request_id),
                ),
            )

        return mapped


def classify(error: Exception) -> ServiceError:
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
