"""Test helpers: read the rich error details (google.rpc.Status) of failed calls, and run extra
servers of our own with other settings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from server.app import App, create_app
from server.config import load_settings
from server.observability import Metrics
from server.transport.auth import CallerPolicy

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class RpcFailure:
    """What a failed call told the client: code, message, ErrorInfo and field violations."""

    code: grpc.StatusCode
    message: str
    reason: str
    error_metadata: dict[str, str]
    field_violations: dict[str, str]
    # Unique per call by design, so two failures compare equal without it.
    request_id: str = field(compare=False, default="")


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
    request_id = metadata.pop("request_id", "")
    return RpcFailure(error.code(), error.details() or "", reason, metadata, violations, request_id)


@asynccontextmanager
async def serving(
    database_url: str,
    *,
    read_url: str | None = None,
    policy: CallerPolicy | None = None,
    metrics: Metrics | None = None,
    **settings: Any,
) -> AsyncIterator[App]:
    """A real server of our own on `database_url` on a free loopback port, stopped on exit."""
    app = create_app(
        load_settings(address="127.0.0.1:0", **settings),
        database_url,
        read_url=read_url,
        policy=policy,
        metrics=metrics,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


_CHAT_TABLE = re.compile(r"\bchat_(sessions|messages|session_counts)\b")
# `tenant_id = $1` (asyncpg placeholders), optionally qualified and cast.
_TENANT_PREDICATE = re.compile(r"\btenant_id = \$\d+")


def is_tenant_scoped(statement: str) -> bool:
    """Whether a statement leaves the chat tables alone or filters them by a bound tenant id."""
    return not _CHAT_TABLE.search(statement) or bool(_TENANT_PREDICATE.search(statement))


class StatementLog:
    """A StatementObserver that appends every statement's SQL to `statements`."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """Record the statement's SQL."""
        self.statements.append(sql)
