"""Test helpers: read the rich error details (google.rpc.Status) of failed calls, run extra
servers of our own with other settings, and check every statement those servers issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from server.app import App, create_app
from server.config import load_settings
from server.data.statements import ObservedDatabase
from server.observability import Metrics
from server.transport.auth import CallerPolicy
from server.transport.tenancy import current_tenant
from tests.tenant_scope import tenancy_problems

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


@dataclass(frozen=True)
class Violation:
    """A statement that was not tenant-scoped, and why."""

    sql: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{'; '.join(self.problems)}\n    in: {' '.join(self.sql.split())}"


class TenancyCheck:
    """A StatementObserver that checks each statement as it is issued: every reference to a chat
    or counter table constrained by a bound parameter holding the call's tenant
    (tests/tenant_scope.py). It records what fails rather than raising, so that the statement
    runs as usual and the test that issued it fails with the reason (tests/conftest.py)."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """Check one statement against the tenant of the call issuing it."""
        try:
            tenant: str | None = current_tenant()
        except LookupError:  # not issued for a call (a health probe)
            tenant = None
        problems = tenancy_problems(sql, arguments, tenant)
        if problems:
            self.violations.append(Violation(sql, tuple(problems)))


# Every server `serving` starts reports here (some run on threads of their own); the suite fails
# the test during which a violation appeared.
TENANCY = TenancyCheck()


class StatementLog:
    """A StatementObserver that appends every statement's SQL to `statements`."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def statement(self, sql: str, arguments: Sequence[Any]) -> None:
        """Record the statement's SQL."""
        self.statements.append(sql)


@asynccontextmanager
async def serving(
    database_url: str,
    *,
    read_url: str | None = None,
    policy: CallerPolicy | None = None,
    metrics: Metrics | None = None,
    statements: list[str] | None = None,
    **settings: Any,
) -> AsyncIterator[App]:
    """A real server of our own on `database_url` on a free loopback port, stopped on exit.

    Every statement its serving pools issue is checked by TENANCY, and appended to `statements`
    when given. Its upkeep (the counter folder on `app.maintenance`) is not a request, so it is
    not observed.
    """
    app = create_app(
        load_settings(address="127.0.0.1:0", **settings),
        database_url,
        read_url=read_url,
        policy=policy,
        metrics=metrics,
        database_type=ObservedDatabase,
    )
    for database in app.databases:
        assert isinstance(database, ObservedDatabase)
        observers = database.observers
        observers.append(TENANCY)
        if statements is not None:
            observers.append(StatementLog(statements))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)
