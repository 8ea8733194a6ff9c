"""Failed calls as exceptions: one class per gRPC status code, each carrying what the service put
in the `grpc-status-details-bin` trailer (a google.rpc.Status with an ErrorInfo and, for bad
fields, a BadRequest) and the request id.

    try:
        await client.get_session_detail("s-1")
    except NotFoundError as error:
        error.reason      # "SESSION_NOT_FOUND"
        error.metadata    # {"session_id": "s-1", "request_id": "..."}
        error.request_id  # the id the server logged the call under
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

# The domain of every ErrorInfo the service sends.
ERROR_DOMAIN = "sessionmonitoring"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"
# The ErrorInfo metadata key that holds the request id.
REQUEST_ID_METADATA_KEY = "request_id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field, as the service's BadRequest names it (e.g. `page_size`)."""

    field: str
    description: str


class SessionMonitoringError(Exception):
    """A call the service (or gRPC on its way there) failed; the base of every error raised here.

    `code` is the gRPC status code, `message` its text. From the google.rpc.Status details:
    `reason` and `domain` of the ErrorInfo ("" when there is none, e.g. for errors gRPC made
    itself), its `metadata`, and the BadRequest `violations`. `request_id` is the id the server
    logged the call under (from ErrorInfo, else the `x-request-id` trailer; None when the call
    never reached the service). `trailing_metadata` is every trailer as received.
    """

    # The code a class stands for; an instance's own `code` is what the call ended with.
    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        request_id: str | None = None,
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.violations = tuple(violations)
        self.request_id = request_id
        self.trailing_metadata = tuple(trailing_metadata)

    def __str__(self) -> str:
        said = f"{self.code.name}: {self.message}"
        facts = [self.reason] if self.reason else []
        if self.request_id:
            facts.append(f"request_id={self.request_id}")
        return f"{said} [{', '.join(facts)}]" if facts else said


class CallCancelledError(SessionMonitoringError):
    """CANCELLED: the call was cancelled (by the server or the channel closing under it).
    Cancelling the awaiting task raises asyncio.CancelledError instead, as asyncio does (hence
    the name: catching this never swallows a task's cancellation)."""

    status_code = grpc.StatusCode.CANCELLED


class UnknownError(SessionMonitoringError):
    """UNKNOWN: a status gRPC could not classify (also any code this client does not know)."""

    status_code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(SessionMonitoringError):
    """INVALID_ARGUMENT: bad request fields (each in `violations`, reason INVALID_ARGUMENT) or
    a malformed tenant id (reason INVALID_TENANT_ID)."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(SessionMonitoringError):
    """DEADLINE_EXCEEDED: the deadline passed; raised by the client itself when the server's
    answer did not arrive in time (then no reason or request id), or by the server (reason
    DEADLINE_EXCEEDED) when its query was cancelled."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(SessionMonitoringError):
    """NOT_FOUND: the tenant has no such session (reason SESSION_NOT_FOUND)."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SessionMonitoringError):
    """ALREADY_EXISTS (no current RPC reports it)."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(SessionMonitoringError):
    """PERMISSION_DENIED: this caller may not act for that tenant (reason TENANT_NOT_ALLOWED)."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(SessionMonitoringError):
    """RESOURCE_EXHAUSTED: no database connection freed up in time (reason DATABASE_BUSY), or
    gRPC's own limits (too many calls in flight, a request too large; no reason)."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(SessionMonitoringError):
    """FAILED_PRECONDITION: the session's stored metadata is not a JSON object, so its status
    cannot be set (reason SESSION_METADATA_NOT_OBJECT)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(SessionMonitoringError):
    """ABORTED: an update kept conflicting with concurrent writers (reason CONFLICT); retry."""

    status_code = grpc.StatusCode.ABORTED


class OutOfRangeError(SessionMonitoringError):
    """OUT_OF_RANGE (no current RPC reports it)."""

    status_code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(SessionMonitoringError):
    """UNIMPLEMENTED: the server predates this RPC."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(SessionMonitoringError):
    """INTERNAL: an unexpected server failure; `metadata["incident_id"]` names it in the
    server's log."""

    status_code = grpc.StatusCode.INTERNAL


class UnavailableError(SessionMonitoringError):
    """UNAVAILABLE: the server or its database cannot be reached (reason DATABASE_UNAVAILABLE
    when the server answered). Raised after the channel's own retries gave up."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DataLossError(SessionMonitoringError):
    """DATA_LOSS (no current RPC reports it)."""

    status_code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(SessionMonitoringError):
    """UNAUTHENTICATED: no tenant (reason MISSING_TENANT_ID), or, with a caller policy, a
    missing or unknown bearer token or client certificate (reason UNAUTHENTICATED)."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: Mapping[grpc.StatusCode, type[SessionMonitoringError]] = {
    cls.status_code: cls
    for cls in (
        CallCancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> SessionMonitoringError:
    """The exception for a failed call, with its google.rpc.Status details decoded."""
    code = error.code()
    message = error.details() or ""
    # grpc-stubs types metadata items as objects with .key/.value; at runtime they are tuples.
    trailing = tuple(cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ()))
    reason, domain = "", ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    status = _status_details(trailing)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
    request_id = metadata.get(REQUEST_ID_METADATA_KEY) or _text(trailing, REQUEST_ID_KEY)
    return _BY_CODE.get(code, UnknownError)(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        violations=violations,
        request_id=request_id,
        trailing_metadata=trailing,
    )


def _status_details(trailing: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None  # not from this service: the code and message still stand
    return None


def _text(trailing: Iterable[tuple[str, str | bytes]], wanted: str) -> str | None:
    for key, value in trailing:
        if key == wanted and isinstance(value, str):
            return value
    return None
