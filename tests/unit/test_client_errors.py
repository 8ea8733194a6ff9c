"""The client's error mapping (failed calls into exceptions with their google.rpc details), its
retry service config and its argument checks, without a server.

The failed calls are built as grpc.aio.AioRpcError, exactly what a grpc.aio channel raises, with
the trailers the server sends: no fake channel is needed (grpcio-testing's is synchronous, and
the client is grpc.aio only).
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sessionmonitoring_client import (
    CallCancelledError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    SessionMonitoringClient,
    SessionMonitoringError,
    UnavailableError,
    UnknownError,
    error_from_rpc,
)
from sessionmonitoring_client.errors import STATUS_DETAILS_KEY
from sessionmonitoring_client.retries import (
    IDEMPOTENT_READS,
    IDEMPOTENT_WRITES,
    SERVICE,
    service_config,
    service_config_json,
)

from server.transport import errors as server_errors


def _rpc_error(
    code: grpc.StatusCode, message: str, *trailers: tuple[str, str | bytes]
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), message, None
    )


def _details(status: status_pb2.Status) -> tuple[str, bytes]:
    return (STATUS_DETAILS_KEY, status.SerializeToString())


def test_the_servers_invalid_argument_details_are_decoded() -> None:
    # The server's own encoder, so that a change to what it sends shows up here.
    sent = server_errors.invalid_argument(
        server_errors.FieldViolation("page_size", "must be 0-100"),
        server_errors.FieldViolation("page", "must not be negative"),
    )
    status = server_errors.to_rpc_status(sent, request_id="r-7")
    error = error_from_rpc(
        _rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            status.message,
            _details(status),
            ("x-request-id", "r-7"),
        )
    )
    assert type(error) is InvalidArgumentError
    assert (error.code, error.message) == (grpc.StatusCode.INVALID_ARGUMENT, status.message)
    assert (error.reason, error.domain) == ("INVALID_ARGUMENT", "sessionmonitoring")
    assert error.violations == (
        FieldViolation("page_size", "must be 0-100"),
        FieldViolation("page", "must not be negative"),
    )
    assert error.request_id == "r-7"
    assert dict(error.metadata) == {"request_id": "r-7"}


def test_error_info_metadata_is_kept_and_read_only() -> None:
    status = server_errors.to_rpc_status(server_errors.session_not_found("s-1"), request_id="r")
    error = error_from_rpc(_rpc_error(grpc.StatusCode.NOT_FOUND, status.message, _details(status)))
    assert isinstance(error, NotFoundError)
    assert dict(error.metadata) == {"session_id": "s-1", "request_id": "r"}
    assert error.violations == ()
    with pytest.raises(TypeError):
        error.metadata["session_id"] = "other"  # type: ignore[index]


def test_without_details_the_request_id_comes_from_the_trailer() -> None:
    error = error_from_rpc(
        _rpc_error(grpc.StatusCode.UNAVAILABLE, "server draining", ("x-request-id", "r-9"))
    )
    assert isinstance(error, UnavailableError)
    assert (error.reason, error.domain, error.request_id) == ("", "", "r-9")
    assert error.trailing_metadata == (("x-request-id", "r-9"),)


def test_a_call_that_never_reached_the_server_has_no_request_id() -> None:
    error = error_from_rpc(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert (error.reason, error.request_id, error.metadata) == ("", None, {})
    assert str(error) == "UNAVAILABLE: connection refused"


def test_details_that_do_not_decode_leave_the_code_and_message() -> None:
    error = error_from_rpc(
        _rpc_error(grpc.StatusCode.INTERNAL, "boom", (STATUS_DETAILS_KEY, b"\xff\xff\xff"))
    )
    assert (error.code, error.message, error.reason) == (grpc.StatusCode.INTERNAL, "boom", "")


def test_details_of_unknown_types_are_skipped() -> None:
    foreign = any_pb2.Any()
    foreign.Pack(error_details_pb2.RetryInfo())
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="DATABASE_BUSY", domain="sessionmonitoring"))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, details=[foreign, info])
    error = error_from_rpc(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", _details(status)))
    assert error.reason == "DATABASE_BUSY"


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK])
def test_every_status_code_has_its_own_error_class(code: grpc.StatusCode) -> None:
    error = error_from_rpc(_rpc_error(code, "x"))
    assert isinstance(error, SessionMonitoringError)
    assert type(error).status_code == code == error.code
    assert type(error) is not SessionMonitoringError


def test_cancelled_is_not_asyncios_cancelled_error() -> None:
    error = error_from_rpc(_rpc_error(grpc.StatusCode.CANCELLED, "x"))
    assert isinstance(error, CallCancelledError)
    assert CallCancelledError.__name__ != "CancelledError"
    assert UnknownError.status_code == grpc.StatusCode.UNKNOWN


def test_str_names_the_code_the_reason_and_the_request_id() -> None:
    error = NotFoundError(
        grpc.StatusCode.NOT_FOUND, "gone", reason="SESSION_NOT_FOUND", request_id="r-1"
    )
    assert str(error) == "NOT_FOUND: gone [SESSION_NOT_FOUND, request_id=r-1]"


# --- the retry service config -------------------------------------------------------------------


def test_the_retry_policy_covers_every_rpc_and_only_unavailable() -> None:
    config = json.loads(service_config_json())
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert names == {(SERVICE, m) for m in (*IDEMPOTENT_READS, *IDEMPOTENT_WRITES)}
    assert names == {
        (SERVICE, m) for m in ("ListSessions", "GetSessionDetail", "UpdateSessionStatus")
    }
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= method_config["retryPolicy"]["maxAttempts"] <= 5  # gRPC caps it at 5
    assert config["retryThrottling"]["maxTokens"] > 0


def test_no_retry_means_no_service_config() -> None:
    assert service_config(retry=False) == {}


# --- arguments ----------------------------------------------------------------------------------


def test_the_client_must_be_created_with_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError, match="inside a coroutine"):
        SessionMonitoringClient("127.0.0.1:1", tenant="t")
