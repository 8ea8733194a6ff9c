"""A typed asyncio client of the sessionmonitoring.v1 gRPC API.

    from sessionmonitoring_client import NotFoundError, SessionMonitoringClient, SessionStatus

    async with SessionMonitoringClient("host:port", tenant="acme", token=...) as client:
        async for session in client.iter_sessions(status=SessionStatus.ACTIVE):
            ...

Responses are the generated messages of `sessionmonitoring.v1.session_monitoring_pb2`, which
this distribution ships (with the stubs of `session_monitoring_pb2_grpc`) for callers who want
them directly.
"""

from sessionmonitoring_client.client import (
    DEFAULT_DEADLINE,
    SessionMonitoringClient,
    SessionStatus,
)
from sessionmonitoring_client.errors import (
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SessionMonitoringError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    error_from_rpc,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "AbortedError",
    "AlreadyExistsError",
    "CallCancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SessionMonitoringClient",
    "SessionMonitoringError",
    "SessionStatus",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_from_rpc",
]
