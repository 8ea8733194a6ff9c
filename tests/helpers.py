"""Reading the rich error details (google.rpc.Status) the service attaches to failed calls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class RpcFailure:
    """What a failed call told the client: code, message, ErrorInfo and field violations."""

    code: grpc.StatusCode
    message: str
    reason: str
    error_metadata: dict[str, str]
    field_violations: dict[str, str]


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    """Decode the google.rpc.Status details carried by `error`'s trailing metadata."""
    # grpc-stubs types metadata items as objects with .key/.value; at runtime they are tuples.
    trailing = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    raw = next(value for key, value in trailing if key == _DETAILS_KEY)
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    reason, metadata, violations = "", {}, {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = {v.field: v.description for v in bad_request.field_violations}
    return RpcFailure(error.code(), error.details() or "", reason, metadata, violations)
