"""Every error the service reports, and the one table that maps each to a gRPC status.

Handlers and the layers below raise these exceptions; only `interceptors` turns them into
statuses. Reasons and messages are constants so that tests assert on them, not on prose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "sessionmonitoring"

# ErrorInfo reasons: stable, machine-readable names callers may switch on.
REASON_MISSING_TENANT_ID = "MISSING_TENANT_ID"
REASON_INVALID_TENANT_ID = "INVALID_TENANT_ID"
REASON_INVALID_ARGUMENT = "INVALID_ARGUMENT"
REASON_SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
REASON_SESSION_METADATA_NOT_OBJECT = "SESSION_METADATA_NOT_OBJECT"
REASON_DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
REASON_DATABASE_BUSY = "DATABASE_BUSY"
REASON_UNAUTHENTICATED = "UNAUTHENTICATED"
REASON_TENANT_NOT_ALLOWED = "TENANT_NOT_ALLOWED"
REASON_DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
REASON_CONFLICT = "CONFLICT"
REASON_INTERNAL = "INTERNAL"
REASON_WATCH_TOKEN_EXPIRED = "WATCH_TOKEN_EXPIRED"  # noqa: S105 -- a reason, not a secret
REASON_WATCH_TOO_SLOW = "WATCH_TOO_SLOW"
REASON_SERVER_BUSY = "SERVER_BUSY"

MESSAGE_MISSING_TENANT_ID = "the x-tenant-id metadata is required"
MESSAGE_INVALID_ARGUMENT = "the request has invalid fields"
# Formatted with the quoted session id, as Kubernetes names what it did not find.
MESSAGE_SESSION_NOT_FOUND = "session {} not found"
MESSAGE_SESSION_METADATA_NOT_OBJECT = (
    "the session's stored metadata is not a JSON object; its status cannot be set without "
    "overwriting it"
)
MESSAGE_DATABASE_UNAVAILABLE = "the database is unavailable; retry later"
MESSAGE_INTERNAL = "internal error"
MESSAGE_DATABASE_BUSY = "all database connections are busy; retry later"
MESSAGE_TENANT_NOT_ALLOWED = "this caller may not act for that tenant"
MESSAGE_DEADLINE_EXCEEDED = "the call's deadline passed before it finished"
MESSAGE_CONFLICT = "the update kept conflicting with concurrent writers; retry"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its path (e.g. `page_size`) and what is wrong with it."""

    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """Base of every error the service reports to callers."""

    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    code = grpc.StatusCode.UNKNOWN
    reason = REASON_INTERNAL

    def __str__(self) -> str:
        return self.message


@dataclass
class MissingTenantError(ServiceError):
    """Raised when a call carries no (or an empty) `x-tenant-id` metadata value."""

    message: str = MESSAGE_MISSING_TENANT_ID
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = REASON_MISSING_TENANT_ID


@dataclass
class InvalidTenantError(ServiceError):
    """Raised when `x-tenant-id` is malformed, repeated, or sent as binary metadata."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = REASON_INVALID_TENANT_ID


@dataclass
class InvalidArgumentError(ServiceError):
    """Raised when request fields are invalid; carries one violation per bad field."""

    message: str = MESSAGE_INVALID_ARGUMENT
    violations: Sequence[FieldViolation] = ()
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = REASON_INVALID_ARGUMENT


@dataclass
class SessionNotFoundError(ServiceError):
    """Raised when the calling tenant has no session with the requested id (another tenant's
    session reads the same: it is not the caller's to know about)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = REASON_SESSION_NOT_FOUND


def session_not_found(session_id: str) -> SessionNotFoundError:
    """NOT_FOUND naming the session, quoted, with its id in ErrorInfo metadata too."""
    return SessionNotFoundError(
        MESSAGE_SESSION_NOT_FOUND.format(quoted(session_id)), metadata={"session_id": session_id}
    )


def quoted(value: str) -> str:
    """`value` in double quotes, with quotes, backslashes and control characters escaped, so
    an id with spaces or newlines reads unambiguously in one line."""
    return json.dumps(value, ensure_ascii=False)


@dataclass
class SessionMetadataNotObjectError(ServiceError):
    """Raised when a status update meets stored metadata that is not a JSON object or null."""

    message: str = MESSAGE_SESSION_METADATA_NOT_OBJECT
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = REASON_SESSION_METADATA_NOT_OBJECT


@dataclass
class DatabaseUnavailableError(ServiceError):
    """Raised when PostgreSQL cannot be reached or drops the connection."""

    message: str = MESSAGE_DATABASE_UNAVAILABLE
    code = grpc.StatusCode.UNAVAILABLE
    reason = REASON_DATABASE_UNAVAILABLE


@dataclass
class DatabaseBusyError(ServiceError):
    """Raised when no pooled database connection frees up within the pool timeout."""

    message: str = MESSAGE_DATABASE_BUSY
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = REASON_DATABASE_BUSY


@dataclass
class UnauthenticatedError(ServiceError):
    """Raised when the caller policy is on and the call's credentials are missing or unknown."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = REASON_UNAUTHENTICATED


@dataclass
class TenantNotAllowedError(ServiceError):
    """Raised when an identified caller asks for a tenant outside its policy entry."""

    message: str = MESSAGE_TENANT_NOT_ALLOWED
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = REASON_TENANT_NOT_ALLOWED


@dataclass
class DeadlineExceededError(ServiceError):
    """Raised when the caller's deadline (or the server's ceiling) passes mid-call."""

    message: str = MESSAGE_DEADLINE_EXCEEDED
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = REASON_DEADLINE_EXCEEDED


@dataclass
class ConflictError(ServiceError):
    """Raised when a write still hits serialization or deadlock failures after its retries."""

    message: str = MESSAGE_CONFLICT
    code = grpc.StatusCode.ABORTED
    reason = REASON_CONFLICT


@dataclass
class InternalError(ServiceError):
    """Raised for anything unexpected; the message never carries internals."""

    message: str = MESSAGE_INTERNAL
    code = grpc.StatusCode.INTERNAL
    reason = REASON_INTERNAL


@dataclass
class ServerBusyError(ServiceError):
    """Raised when the process already serves as many calls (or streams) as it may at once."""

    message: str = "the server is serving as many calls as it may at once; retry later"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = REASON_SERVER_BUSY


@dataclass
class WatchTokenExpiredError(ServiceError):
    """Raised when a watch cannot resume where its token points: the changes after it were
    pruned (older than the retention window) or the tables were truncated since."""

    message: str = (
        "the watch token is older than the change history kept: list again, then watch from "
        "the list's watch_token"
    )
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = REASON_WATCH_TOKEN_EXPIRED


@dataclass
class WatchTooSlowError(ServiceError):
    """Raised when a stream's client fell so far behind that its buffer filled; metadata
    `resume_token` resumes right after the last event it was sent."""

    message: str = "the client fell too far behind the changes; resume from resume_token"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = REASON_WATCH_TOO_SLOW


def invalid_argument(*violations: FieldViolation) -> InvalidArgumentError:
    """Build the INVALID_ARGUMENT error for the given field violations."""
    described = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgumentError(
        message=f"{MESSAGE_INVALID_ARGUMENT}: {described}", violations=violations
    )


def to_rpc_status(error: ServiceError, *, request_id: str | None = None) -> status_pb2.Status:
    """The google.rpc.Status for `error`: ErrorInfo (with the request id) always, BadRequest for
    field violations."""
    metadata = dict(error.metadata)
    if request_id is not None:
        metadata["request_id"] = request_id
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if isinstance(error, InvalidArgumentError) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    return status_pb2.Status(
        code=getattr(code_pb2, error.code.name), message=error.message, details=details
    )


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
