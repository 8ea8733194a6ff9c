"""Log and error hygiene: no content, request text or token in logs, none in errors but the
session id NOT_FOUND names back to its caller; access lines."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.rpc import status_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.observability import JsonFormatter
from server.transport import errors
from server.transport.auth import load_policy
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving

Metadata = Sequence[tuple[str, str | bytes]]

# Internals that must never reach a caller.
LEAKS = ("SELECT", "UPDATE ", "Traceback", "asyncpg", "sqlalchemy")
UNREACHABLE_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
DETAILS_KEY = "grpc-status-details-bin"
CALL_TIMEOUT = 30.0


def marker(kind: str) -> str:
    """A string that cannot appear anywhere by accident."""
    return f"{kind}{uuid.uuid4().hex}"


def rendered(records: Iterable[logging.LogRecord]) -> list[str]:
    """Every record as text and as the service's JSON line, with args, extras and traceback."""
    text = logging.Formatter("%(name)s %(levelname)s %(message)s")
    as_json = JsonFormatter()
    return [f"{text.format(record)}\n{as_json.format(record)}" for record in records]


def assert_absent(secrets: Sequence[str], lines: Iterable[str]) -> None:
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"{secret!r} leaked into: {line[:500]!r}"


async def failed(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def assert_clean_error(error: grpc.aio.AioRpcError, secrets: Sequence[str]) -> None:
    """Neither the message nor any trailing metadata (raw or decoded) has secrets or internals."""
    details = error.details() or ""
    trailing = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    texts = [details]
    for key, value in trailing:
        raw = value if isinstance(value, bytes) else value.encode()
        for secret in secrets:
            assert secret.encode() not in raw, f"{secret!r} leaked into trailing {key!r}"
        texts.append(key)
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(raw)
            texts.append(str(status))
        else:
            texts.append(raw.decode(errors="replace"))
    assert_absent(secrets, texts)
    for leak in LEAKS:
        assert leak not in details


def with_credentials(metadata: Metadata, token: str, request_id: str = "") -> list[Any]:
    extra = [("authorization", f"Bearer {token}")]
    if request_id:
        extra.append(("x-request-id", request_id))
    return [*metadata, *extra]


async def test_no_content_request_text_or_token_reaches_logs_or_errors_for_any_outcome(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    content, field, token = marker("content-"), marker("field-"), marker("token-")
    secrets = (content, field, token)
    await factory.session(tenant, "s", metadata={"status": "active", "note": content})
    await factory.message(tenant, "s", content=f"user says {content}")
    await factory.message(
        tenant,
        "s",
        role="assistant",
        content=f"assistant says {content}",
        metadata={
            "retrieval": [{"source": "kb", "content": content}],
            "tool_calls": [{"name": "lookup", "arguments": {"q": content}, "result": content}],
            "error": {"code": "E", "message": content},
        },
    )
    await factory.session(tenant, "array", metadata=[content])
    caplog.set_level(logging.DEBUG)
    md = with_credentials(tenant_metadata(tenant), token)

    # Successful calls carry the content back to the caller, and only there.
    detail = await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s"), metadata=md)
    assert content in detail.messages[0].content
    await stub.ListSessions(pb.ListSessionsRequest(channel_type=field), metadata=md)
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s", status=pb.SESSION_STATUS_CLOSED), metadata=md
    )

    # NOT_FOUND names the session the caller asked for, back to that caller (as Kubernetes
    # does); the id still reaches no log line.
    error = await failed(
        stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id=field), metadata=md)
    )
    assert failure(error).reason == errors.REASON_SESSION_NOT_FOUND
    assert failure(error).message == f'session "{field}" not found'
    assert_clean_error(error, (content, token))

    failures: dict[str, Callable[[], Awaitable[Any]]] = {
        errors.REASON_INVALID_ARGUMENT: lambda: stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id=f"{field}\x01", page_token=field), metadata=md
        ),
        errors.REASON_SESSION_METADATA_NOT_OBJECT: lambda: stub.UpdateSessionStatus(
            pb.UpdateSessionStatusRequest(session_id="array", status=pb.SESSION_STATUS_CLOSED),
            metadata=md,
        ),
        errors.REASON_MISSING_TENANT_ID: lambda: stub.ListSessions(
            pb.ListSessionsRequest(), metadata=with_credentials([], token)
        ),
        errors.REASON_INVALID_TENANT_ID: lambda: stub.ListSessions(
            pb.ListSessionsRequest(),
            metadata=with_credentials([("x-tenant-id", f"{field}!")], token),
        ),
    }
    for reason, call in failures.items():
        error = await failed(call())
        assert failure(error).reason == reason
        assert_clean_error(error, secrets)
    too_long = pb.ListSessionsRequest(channel_type=field * 300, page_token=field)
    error = await failed(stub.ListSessions(too_long, metadata=md))
    assert failure(error).reason == errors.REASON_INVALID_ARGUMENT
    assert_clean_error(error, secrets)
    oversized = pb.GetSessionDetailRequest(session_id=field * 2000)
    error = await failed(stub.GetSessionDetail(oversized, metadata=md))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_clean_error(error, secrets)

    access_lines = [r for r in caplog.records if r.name == "server.access"]
    # One access line per call that reached the service (the oversized one never did).
    assert len(access_lines) == 3 + 1 + len(failures) + 1
    assert_absent(secrets, rendered(caplog.records))


async def test_a_caller_policy_never_echoes_or_logs_the_presented_token(
    database_url: str, tmp_path: Path, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    known, unknown = marker("known-"), marker("unknown-")
    path = tmp_path / "callers.toml"
    path.write_text(
        f"""
[[callers]]
name = "billing"
token_sha256 = ["{hashlib.sha256(known.encode()).hexdigest()}"]
tenants = ["{tenant}"]
"""
    )
    policy = load_policy(path)
    caplog.set_level(logging.DEBUG)
    async with (
        serving(database_url, policy=policy) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        stub = pb_grpc.SessionMonitoringStub(channel)
        request = pb.ListSessionsRequest()
        cases: list[tuple[list[tuple[str, str]], grpc.StatusCode, str]] = [
            (
                [("x-tenant-id", tenant), ("authorization", f"Bearer {unknown}")],
                grpc.StatusCode.UNAUTHENTICATED,
                errors.REASON_UNAUTHENTICATED,
            ),
            (
                [("x-tenant-id", tenant), ("authorization", f"Basic {unknown}")],
                grpc.StatusCode.UNAUTHENTICATED,
                errors.REASON_UNAUTHENTICATED,
            ),
            (
                [("x-tenant-id", tenant), ("authorization", unknown)],
                grpc.StatusCode.UNAUTHENTICATED,
                errors.REASON_UNAUTHENTICATED,
            ),
            (
                [("x-tenant-id", f"{tenant}-other"), ("authorization", f"Bearer {known}")],
                grpc.StatusCode.PERMISSION_DENIED,
                errors.REASON_TENANT_NOT_ALLOWED,
            ),
        ]
        for md, code, reason in cases:
            error = await failed(stub.ListSessions(request, metadata=md, timeout=CALL_TIMEOUT))
            result = failure(error)
            assert (result.code, result.reason) == (code, reason)
            assert_clean_error(error, (known, unknown))
        await stub.ListSessions(
            request,
            metadata=[("x-tenant-id", tenant), ("authorization", f"Bearer {known}")],
            timeout=CALL_TIMEOUT,
        )

    access = [r for r in caplog.records if r.name == "server.access"]
    assert [getattr(r, "caller", None) for r in access] == ["-", "-", "-", "billing", "billing"]
    assert_absent((known, unknown), rendered(caplog.records))


async def test_an_unreachable_database_is_reported_without_internals_in_logs_or_errors(
    tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    field, token = marker("field-"), marker("token-")
    caplog.set_level(logging.DEBUG)
    async with (
        serving(
            UNREACHABLE_DATABASE_URL, db_pool_size=1, db_pool_timeout=1, db_connect_timeout=1
        ) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        stub = pb_grpc.SessionMonitoringStub(channel)
        error = await failed(
            stub.GetSessionDetail(
                pb.GetSessionDetailRequest(session_id=field),
                metadata=with_credentials(tenant_metadata(tenant), token),
                timeout=CALL_TIMEOUT,
            )
        )

    assert failure(error).reason == errors.REASON_DATABASE_UNAVAILABLE
    assert_clean_error(error, (field, token, "127.0.0.1:1", "postgres@"))
    assert_absent((field, token, "postgres@"), rendered(caplog.records))
    assert any(r.name == "server.transport.interceptors" for r in caplog.records)


@pytest.mark.parametrize("outcome", ["OK", "NOT_FOUND"])
async def test_the_access_line_names_method_tenant_code_and_the_callers_request_id(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
    outcome: str,
) -> None:
    await factory.session(tenant, "s")
    request_id = f"req-{uuid.uuid4().hex}"
    caplog.set_level(logging.INFO, logger="server.access")
    md = [*tenant_metadata(tenant), ("x-request-id", request_id)]
    request = pb.GetSessionDetailRequest(session_id="s" if outcome == "OK" else "missing")

    if outcome == "OK":
        call = stub.GetSessionDetail(request, metadata=md)
        await call
        trailing = cast(Iterable[tuple[str, str | bytes]], await call.trailing_metadata())
        assert ("x-request-id", request_id) in list(trailing)
    else:
        error = await failed(stub.GetSessionDetail(request, metadata=md))
        assert failure(error).request_id == request_id

    [line] = [
        r
        for r in caplog.records
        if r.name == "server.access" and getattr(r, "request_id", None) == request_id
    ]
    message = line.getMessage()
    assert message.startswith("GetSessionDetail ")
    assert f"tenant={tenant}" in message
    assert f"code={outcome}" in message
    entry = json.loads(JsonFormatter().format(line))
    assert (entry["method"], entry["tenant"], entry["code"], entry["request_id"]) == (
        "GetSessionDetail",
        tenant,
        outcome,
        request_id,
    )
    assert entry["level"] == "INFO"
