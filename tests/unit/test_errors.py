"""errors.to_rpc_status: gRPC code, message, ErrorInfo reason/domain/metadata and BadRequest."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2

from server.transport import errors
from server.transport.errors import FieldViolation


def _error_info(detail: any_pb2.Any) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


def _bad_request(detail: any_pb2.Any) -> error_details_pb2.BadRequest:
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    return bad_request


@pytest.mark.parametrize(
    ("error", "code", "reason", "message"),
    [
        (
            errors.MissingTenantError(),
            code_pb2.UNAUTHENTICATED,
            errors.REASON_MISSING_TENANT_ID,
            errors.MESSAGE_MISSING_TENANT_ID,
        ),
        (
            errors.InvalidTenantError("bad tenant"),
            code_pb2.INVALID_ARGUMENT,
            errors.REASON_INVALID_TENANT_ID,
            "bad tenant",
        ),
        (
            errors.session_not_found("s-1"),
            code_pb2.NOT_FOUND,
            errors.REASON_SESSION_NOT_FOUND,
            'session "s-1" not found',
        ),
        (
            errors.SessionMetadataNotObjectError(),
            code_pb2.FAILED_PRECONDITION,
            errors.REASON_SESSION_METADATA_NOT_OBJECT,
            errors.MESSAGE_SESSION_METADATA_NOT_OBJECT,
        ),
        (
            errors.DatabaseUnavailableError(),
            code_pb2.UNAVAILABLE,
            errors.REASON_DATABASE_UNAVAILABLE,
            errors.MESSAGE_DATABASE_UNAVAILABLE,
        ),
        (
            errors.InternalError(),
            code_pb2.INTERNAL,
            errors.REASON_INTERNAL,
            errors.MESSAGE_INTERNAL,
        ),
    ],
)
def test_each_error_maps_to_its_code_message_and_error_info(
    error: errors.ServiceError, code: int, reason: str, message: str
) -> None:
    status = errors.to_rpc_status(error)
    assert status.code == code
    assert status.message == message
    [detail] = status.details
    info = _error_info(detail)
    assert info.reason == reason
    assert info.domain == errors.ERROR_DOMAIN
    assert dict(info.metadata) == dict(error.metadata)


def test_status_codes_agree_between_grpc_and_google_rpc() -> None:
    # The interceptor sends error.code to grpc and status.code in the details; they must match.
    for error in (errors.MissingTenantError(), errors.session_not_found("s")):
        assert errors.to_rpc_status(error).code == error.code.value[0]


def test_error_metadata_is_carried_in_error_info() -> None:
    status = errors.to_rpc_status(errors.InternalError(metadata={"incident_id": "abc123"}))
    assert dict(_error_info(status.details[0]).metadata) == {"incident_id": "abc123"}


def test_invalid_argument_carries_every_field_violation_in_order() -> None:
    error = errors.invalid_argument(
        FieldViolation("page_size", "must be between 1 and 100 (0 = 20)"),
        FieldViolation("start_time", "must not be after end_time"),
    )
    status = errors.to_rpc_status(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message.startswith(errors.MESSAGE_INVALID_ARGUMENT)
    assert "page_size" in status.message
    assert "start_time" in status.message
    info_detail, bad_request_detail = status.details
    info = _error_info(info_detail)
    assert (info.reason, info.domain) == (errors.REASON_INVALID_ARGUMENT, errors.ERROR_DOMAIN)
    assert [
        (v.field, v.description) for v in _bad_request(bad_request_detail).field_violations
    ] == [
        ("page_size", "must be between 1 and 100 (0 = 20)"),
        ("start_time", "must not be after end_time"),
    ]


def test_invalid_argument_without_violations_carries_no_bad_request() -> None:
    status = errors.to_rpc_status(errors.InvalidArgumentError())
    [detail] = status.details
    assert detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
    assert status.message == errors.MESSAGE_INVALID_ARGUMENT


def test_a_tenant_error_carries_no_bad_request_even_though_it_is_invalid_argument() -> None:
    error = errors.InvalidTenantError("bad")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    [detail] = errors.to_rpc_status(error).details
    assert detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)


def test_service_errors_read_as_their_message() -> None:
    assert str(errors.session_not_found("s-1")) == 'session "s-1" not found'


@pytest.mark.parametrize(
    ("session_id", "shown"),
    [
        ("s-1", '"s-1"'),
        ("x ", '"x "'),
        ('say "hi"', '"say \\"hi\\""'),
        ("two\nlines", '"two\\nlines"'),
        ("back\\slash", '"back\\\\slash"'),
        ("\x00bell\x07", '"\\u0000bell\\u0007"'),
        ("日本語", '"日本語"'),
    ],
)
def test_not_found_quotes_the_session_id_with_escapes(session_id: str, shown: str) -> None:
    error = errors.session_not_found(session_id)
    assert error.message == f"session {shown} not found"
    assert "\n" not in error.message
    assert error.metadata == {"session_id": session_id}
