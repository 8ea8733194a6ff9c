"""The interceptor chain on every kind of method, proven with test-only methods of our service on
a real server: the same tenancy, caller policy, deadline, error details, access log and metrics
as the unary RPCs, and a client that cancels ends the handler.

The probe's methods are registered under `sessionmonitoring.v1.SessionMonitoring` like any new
RPC would be; the interceptor covers them by its rule (every method of a service that is not
tenantless), not by a switch of the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import create_app
from server.config import load_settings
from server.data.statements import PoolExhaustedError
from server.observability import Metrics
from server.transport import errors
from server.transport.auth import CallerPolicy, load_policy
from server.transport.tenancy import current_tenant
from tests.factories import tenant_metadata
from tests.helpers import RpcFailure, failure

SERVICE = "sessionmonitoring.v1.SessionMonitoring"
# A service the server assembly has never heard of: covered by the same rule.
OTHER_SERVICE = "acme.reports.v1.Reports"
# Generous: bounds calls that are not about deadlines, so a broken chain fails instead of hanging.
CALL_TIMEOUT = 30.0
SHORT_DEADLINE = 0.5
# Bigger than the transport buffers hold, so a client that never reads stalls the write.
FLOOD_MESSAGE = "x" * 3_000_000

probe_logger = logging.getLogger("tests.probe")

# What a probe step raises, and what the caller must get for it.
FAILURES: dict[str, tuple[Callable[[], Exception], grpc.StatusCode, str]] = {
    "conflict": (errors.ConflictError, grpc.StatusCode.ABORTED, errors.REASON_CONFLICT),
    "invalid": (
        lambda: errors.invalid_argument(errors.FieldViolation("page_size", "too big")),
        grpc.StatusCode.INVALID_ARGUMENT,
        errors.REASON_INVALID_ARGUMENT,
    ),
    "unexpected": (
        lambda: RuntimeError("relation chat_sessions does not exist (secret internals)"),
        grpc.StatusCode.INTERNAL,
        errors.REASON_INTERNAL,
    ),
    "database-gone": (
        lambda: asyncpg.ConnectionDoesNotExistError("connection was closed mid-operation"),
        grpc.StatusCode.UNAVAILABLE,
        errors.REASON_DATABASE_UNAVAILABLE,
    ),
    "pool-busy": (
        PoolExhaustedError,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.REASON_DATABASE_BUSY,
    ),
}


class Probe:
    """Test-only handlers of every kind. Each runs the steps it is sent (in the request, comma-
    separated, or one per request message) and answers each with `<tenant it sees>:<step>`:

    - `hold`: waits until the test sets `release` (first setting `holding`);
    - `busy`: blocks the whole server (its event loop) past SHORT_DEADLINE, then holds;
    - `linger`: as `hold`, but a cancel does not stop it: it still answers, as a handler that
      finishes its work would, and that answer can no longer be written;
    - `flood`: sets `holding`, then sends huge messages without end, never awaiting anything
      but the write;
    - `fail:<kind>`: raises the exception of FAILURES[kind];
    - `abort`: aborts the call itself with FAILED_PRECONDITION;
    - anything else: just answers.
    """

    def __init__(self) -> None:
        self.tenants: list[str] = []  # one per handler run, as it saw it
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.ended = asyncio.Event()

    def handlers(self, service: str) -> grpc.GenericRpcHandler[Any, Any]:
        codecs: dict[str, Any] = {
            "request_deserializer": StringValue.FromString,
            "response_serializer": StringValue.SerializeToString,
        }
        return grpc.method_handlers_generic_handler(
            service,
            {
                "ProbeUnary": grpc.unary_unary_rpc_method_handler(self.unary, **codecs),
                "ProbeYields": grpc.unary_stream_rpc_method_handler(self.yields, **codecs),
                "ProbeWrites": grpc.unary_stream_rpc_method_handler(self.writes, **codecs),
                "ProbeUpload": grpc.stream_unary_rpc_method_handler(self.upload, **codecs),
                "ProbeChat": grpc.stream_stream_rpc_method_handler(self.chat, **codecs),
            },
        )

    async def unary(self, request: StringValue, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with self._running():
            for step in request.value.split(","):
                await self._act(step, context)
            return _answer(request.value)

    async def yields(
        self, request: StringValue, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        with self._running():
            for step in request.value.split(","):
                if step == "flood":
                    self.holding.set()
                    while True:
                        yield StringValue(value=FLOOD_MESSAGE)
                await self._act(step, context)
                yield _answer(step)

    async def writes(
        self, request: StringValue, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        with self._running():
            for step in request.value.split(","):
                await self._act(step, context)
                await context.write(_answer(step))

    async def upload(
        self, requests: AsyncIterator[StringValue], context: grpc.aio.ServicerContext[Any, Any]
    ) -> StringValue:
        with self._running():
            steps = []
            async for request in requests:
                await self._act(request.value, context)
                steps.append(request.value)
            return _answer(",".join(steps))

    async def chat(
        self, requests: AsyncIterator[StringValue], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        with self._running():
            async for request in requests:
                await self._act(request.value, context)
                yield _answer(request.value)

    @contextmanager
    def _running(self) -> Iterator[None]:
        self.tenants.append(current_tenant())
        try:
            yield
        finally:
            probe_logger.info("probe handler ended")
            self.ended.set()

    async def _act(self, step: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if step == "hold":
            self.holding.set()
            await self.release.wait()
        elif step == "busy":
            # Blocking on purpose: a server too busy to run its own timers when a deadline passes.
            time.sleep(SHORT_DEADLINE + 0.3)  # noqa: ASYNC251
            await self._act("hold", context)
        elif step == "linger":
            self.holding.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()
        elif step.startswith("fail:"):
            raise FAILURES[step.removeprefix("fail:")][0]()
        elif step == "abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the probe aborted")


def _answer(step: str) -> StringValue:
    return StringValue(value=f"{current_tenant()}:{step}")


@dataclass
class Outcome:
    """What the client of one probe call saw."""

    received: list[str]
    error: grpc.aio.AioRpcError | None
    trailing_request_id: str | None

    @property
    def failure(self) -> RpcFailure:
        assert self.error is not None, f"the call succeeded with {self.received}"
        return failure(self.error)


# Which probe method each kind of call reaches.
KINDS = {
    "unary-unary": "ProbeUnary",
    "unary-stream-generator": "ProbeYields",
    "unary-stream-write": "ProbeWrites",
    "stream-unary": "ProbeUpload",
    "stream-stream": "ProbeChat",
}
STREAMING_KINDS = [kind for kind in KINDS if kind != "unary-unary"]
RESPONSE_STREAMING_KINDS = ["unary-stream-generator", "unary-stream-write", "stream-stream"]


def _start(
    channel: grpc.aio.Channel,
    kind: str,
    steps: Sequence[str],
    metadata: Sequence[tuple[str, str]],
    deadline: float | None = CALL_TIMEOUT,
    service: str = SERVICE,
) -> Any:
    """Start a probe call of `kind` running `steps`; `deadline` in seconds, None for none."""
    path = f"/{service}/{KINDS[kind]}"
    codecs = (StringValue.SerializeToString, StringValue.FromString)
    request = StringValue(value=",".join(steps))
    requests = iter([StringValue(value=step) for step in steps])
    if kind == "unary-unary":
        return channel.unary_unary(path, *codecs)(request, metadata=metadata, timeout=deadline)
    if kind.startswith("unary-stream"):
        return channel.unary_stream(path, *codecs)(request, metadata=metadata, timeout=deadline)
    if kind == "stream-unary":
        return channel.stream_unary(path, *codecs)(requests, metadata=metadata, timeout=deadline)
    return channel.stream_stream(path, *codecs)(requests, metadata=metadata, timeout=deadline)


async def _finish(kind: str, call: Any) -> Outcome:
    received: list[str] = []
    error = None
    try:
        if kind in ("unary-unary", "stream-unary"):
            received.append((await call).value)
        else:
            async for message in call:
                received.append(message.value)
    except grpc.aio.AioRpcError as raised:
        error = raised
    trailing = error.trailing_metadata() if error is not None else await call.trailing_metadata()
    # grpc-stubs types metadata items as objects with .key/.value; at runtime they are tuples.
    items = cast(Iterable[tuple[str, str | bytes]], trailing or ())
    request_ids = [value for key, value in items if key == "x-request-id"]
    return Outcome(received, error, str(request_ids[0]) if request_ids else None)


async def _call(
    channel: grpc.aio.Channel,
    kind: str,
    steps: Sequence[str],
    metadata: Sequence[tuple[str, str]],
    deadline: float | None = CALL_TIMEOUT,
    service: str = SERVICE,
) -> Outcome:
    return await _finish(kind, _start(channel, kind, steps, metadata, deadline, service))


def _metadata(tenant: str, request_id: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [*tenant_metadata(tenant), ("x-request-id", request_id), *extra]


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


@dataclass
class Probed:
    """A real server with the probe's methods, a channel to it, and its metrics."""

    channel: grpc.aio.Channel
    probe: Probe
    metrics: Metrics
    port: int

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def _probed(
    database_url: str, *, policy: CallerPolicy | None = None, **settings: Any
) -> AsyncIterator[Probed]:
    probe, metrics = Probe(), Metrics()
    app = create_app(
        load_settings(address="127.0.0.1:0", **settings),
        database_url,
        policy=policy,
        metrics=metrics,
    )
    # Added like any new RPC of our service; the server assembly (and its interceptor) is the
    # real one.
    app.server.add_generic_rpc_handlers((probe.handlers(SERVICE), probe.handlers(OTHER_SERVICE)))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Probed(channel, probe, metrics, app.port)
    finally:
        probe.release.set()
        await app.stop(0)


@pytest.fixture
async def probed(database_url: str) -> AsyncIterator[Probed]:
    async with _probed(database_url) as running:
        yield running


class Lines(logging.Handler):
    """The access lines, the interceptor's own lines and the probe's lines, in the order the
    server writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self._written = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._written.set()

    def access(self, request_id: str) -> list[dict[str, Any]]:
        """The access lines of the call with `request_id`."""
        return [
            record.__dict__
            for record in self.records
            if record.name == "server.access" and record.__dict__["request_id"] == request_id
        ]

    async def line(self, request_id: str) -> dict[str, Any]:
        """The one access line of the call; waits for it, since the server may still be
        finishing the call when the client has its answer."""
        async with asyncio.timeout(CALL_TIMEOUT):
            while not (lines := self.access(request_id)):
                self._written.clear()
                await self._written.wait()
        [line] = lines
        return line


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [
        logging.getLogger("server.access"),
        logging.getLogger("server.transport.interceptors"),
        probe_logger,
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _ended(probe: Probe) -> None:
    async with asyncio.timeout(CALL_TIMEOUT):
        await probe.ended.wait()


async def _holding(probe: Probe) -> None:
    async with asyncio.timeout(CALL_TIMEOUT):
        await probe.holding.wait()


# --- tenancy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_kind_of_handler_sees_the_calls_tenant_and_returns_the_request_id(
    probed: Probed, tenant: str, kind: str
) -> None:
    request_id = _request_id()
    outcome = await _call(probed.channel, kind, ["a", "b"], _metadata(tenant, request_id))
    assert outcome.error is None
    if kind in ("unary-unary", "stream-unary"):
        assert outcome.received == [f"{tenant}:a,b"]
    else:
        assert outcome.received == [f"{tenant}:a", f"{tenant}:b"]
    assert probed.probe.tenants == [tenant]
    assert outcome.trailing_request_id == request_id


@pytest.mark.parametrize(
    ("tenant_metadata_sent", "code", "reason"),
    [
        ([], grpc.StatusCode.UNAUTHENTICATED, errors.REASON_MISSING_TENANT_ID),
        ([("x-tenant-id", "")], grpc.StatusCode.UNAUTHENTICATED, errors.REASON_MISSING_TENANT_ID),
        (
            [("x-tenant-id", "acme corp")],
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.REASON_INVALID_TENANT_ID,
        ),
        (
            [("x-tenant-id", "a"), ("x-tenant-id", "b")],
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.REASON_INVALID_TENANT_ID,
        ),
    ],
    ids=["missing", "empty", "malformed", "repeated"],
)
@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_a_stream_without_a_valid_tenant_fails_as_a_unary_call_does_and_never_runs(
    probed: Probed,
    kind: str,
    tenant_metadata_sent: list[tuple[str, str]],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    request_id = _request_id()
    metadata = [*tenant_metadata_sent, ("x-request-id", request_id)]
    # No request message: the server refuses the call on its metadata, and a client still
    # sending one then may see grpc's local "Failed execute_batch" (INTERNAL) instead.
    outcome = await _call(probed.channel, kind, [], metadata)
    assert (outcome.failure.code, outcome.failure.reason) == (code, reason)
    assert outcome.failure.request_id == request_id
    assert outcome.trailing_request_id == request_id
    assert outcome.received == []
    assert probed.probe.tenants == []


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_method_of_any_other_service_gets_the_same_chain(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    refused = await _call(probed.channel, kind, ["a"], [], service=OTHER_SERVICE)
    assert refused.failure.reason == errors.REASON_MISSING_TENANT_ID
    request_id = _request_id()
    served = await _call(
        probed.channel, kind, ["a"], _metadata(tenant, request_id), service=OTHER_SERVICE
    )
    assert served.received == [f"{tenant}:a"]
    line = await lines.line(request_id)
    assert (line["method"], line["code"]) == (f"{OTHER_SERVICE}/{KINDS[kind]}", "OK")


# --- caller policy ---------------------------------------------------------------------------


@dataclass
class PolicyProbed:
    """A probed server whose policy lets `token` act for `tenant` only."""

    probed: Probed
    token: str


@pytest.fixture
async def policy_probed(
    database_url: str, tmp_path: Path, tenant: str
) -> AsyncIterator[PolicyProbed]:
    token = secrets.token_urlsafe(32)
    path = tmp_path / "callers.toml"
    path.write_text(
        "[[callers]]\n"
        'name = "billing"\n'
        f'token_sha256 = ["{hashlib.sha256(token.encode()).hexdigest()}"]\n'
        f'tenants = ["{tenant}"]\n'
    )
    async with _probed(database_url, policy=load_policy(path)) as running:
        yield PolicyProbed(running, token)


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_the_caller_policy_admits_a_stream_for_the_callers_tenant(
    policy_probed: PolicyProbed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    bearer = ("authorization", f"Bearer {policy_probed.token}")
    channel = policy_probed.probed.channel
    outcome = await _call(channel, kind, ["a"], _metadata(tenant, request_id, bearer))
    assert outcome.error is None
    assert outcome.received == [f"{tenant}:a"]
    line = await lines.line(request_id)
    assert (line["caller"], line["tenant"], line["code"]) == ("billing", tenant, "OK")


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_the_caller_policy_refuses_a_stream_for_another_tenant_before_it_runs(
    policy_probed: PolicyProbed, tenant: str, kind: str
) -> None:
    bearer = ("authorization", f"Bearer {policy_probed.token}")
    other = f"{tenant}-other"
    outcome = await _call(
        policy_probed.probed.channel, kind, ["a"], _metadata(other, _request_id(), bearer)
    )
    assert outcome.failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert outcome.failure.reason == errors.REASON_TENANT_NOT_ALLOWED
    assert outcome.received == []
    assert policy_probed.probed.probe.tenants == []


@pytest.mark.parametrize("credentials", ["none", "unknown-token"])
@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_the_caller_policy_refuses_a_stream_without_known_credentials(
    policy_probed: PolicyProbed, tenant: str, kind: str, credentials: str
) -> None:
    extra = [] if credentials == "none" else [("authorization", f"Bearer {secrets.token_hex()}")]
    outcome = await _call(
        policy_probed.probed.channel, kind, ["a"], _metadata(tenant, _request_id(), *extra)
    )
    assert outcome.failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert outcome.failure.reason == errors.REASON_UNAUTHENTICATED
    assert policy_probed.probed.probe.tenants == []


async def test_health_and_reflection_stay_outside_the_chain(
    policy_probed: PolicyProbed, tenant: str
) -> None:
    # The policy is on and no call here names a tenant or carries credentials.
    channel = policy_probed.probed.channel
    health = health_pb2_grpc.HealthStub(channel)
    checked = await health.Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=CALL_TIMEOUT
    )
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=CALL_TIMEOUT)
    watched = await watch.read()
    assert isinstance(watched, health_pb2.HealthCheckResponse)
    assert watched.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=CALL_TIMEOUT
    )
    listed = await reflect.read()
    assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
    assert SERVICE in {s.name for s in listed.list_services_response.service}
    refused = await _call(channel, "unary-stream-generator", ["a"], tenant_metadata(tenant))
    assert refused.failure.reason == errors.REASON_UNAUTHENTICATED


# --- deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_a_stream_outliving_the_callers_deadline_ends_deadline_exceeded(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    # This client sends its deadline but does not enforce it: only the server can end the call.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{probed.port}", options=[("grpc.enable_deadline_checking", 0)]
    ) as lenient:
        outcome = await _call(
            lenient, kind, ["a", "hold"], _metadata(tenant, request_id), SHORT_DEADLINE
        )
    assert outcome.error is not None
    assert outcome.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    if kind in RESPONSE_STREAMING_KINDS:
        assert outcome.received == [f"{tenant}:a"]
    await _ended(probed.probe)
    line = await lines.line(request_id)
    assert line["code"] == "DEADLINE_EXCEEDED"
    method = KINDS[kind]
    reason = errors.REASON_DEADLINE_EXCEEDED
    assert probed.sample("sessionmonitoring_rpc_errors_total", method=method, reason=reason) == 1


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_deadline_passing_while_the_server_is_busy_is_still_deadline_exceeded(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    # grpc cancels the handler before the server's own timer gets to run: the call must still
    # be reported as the deadline it was, not as a client cancelling.
    request_id = _request_id()
    try:
        outcome = await _call(
            probed.channel, kind, ["a", "busy"], _metadata(tenant, request_id), SHORT_DEADLINE
        )
    except asyncio.CancelledError:
        # grpc.aio's client can surface its own deadline as CancelledError on a client-streaming
        # call (a race inside grpc); the server's side of the call is what this test is about.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    else:
        assert outcome.error is not None
        assert outcome.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _ended(probed.probe)
    assert (await lines.line(request_id))["code"] == "DEADLINE_EXCEEDED"
    method = KINDS[kind]
    reason = errors.REASON_DEADLINE_EXCEEDED
    assert probed.sample("sessionmonitoring_rpc_errors_total", method=method, reason=reason) == 1


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_a_stream_is_not_cut_by_the_servers_unary_deadline_ceiling(
    database_url: str, tenant: str, kind: str
) -> None:
    ceiling = 0.2
    async with _probed(database_url, default_deadline=ceiling) as running:
        call = _start(running.channel, kind, ["a", "hold", "b"], tenant_metadata(tenant), None)
        await _holding(running.probe)
        # Outlives the ceiling on purpose: a unary call would have ended by now (see below).
        await asyncio.sleep(ceiling * 3)
        running.probe.release.set()
        outcome = await _finish(kind, call)
    assert outcome.error is None, outcome.failure
    if kind in RESPONSE_STREAMING_KINDS:
        assert outcome.received == [f"{tenant}:a", f"{tenant}:hold", f"{tenant}:b"]
    else:
        assert outcome.received == [f"{tenant}:a,hold,b"]


async def test_a_unary_call_on_the_same_server_is_cut_by_the_ceiling(
    database_url: str, tenant: str
) -> None:
    async with _probed(database_url, default_deadline=0.2) as running:
        outcome = await _call(
            running.channel, "unary-unary", ["hold"], tenant_metadata(tenant), None
        )
        await _ended(running.probe)
    assert outcome.failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert outcome.failure.reason == errors.REASON_DEADLINE_EXCEEDED
    assert outcome.failure.message == errors.MESSAGE_DEADLINE_EXCEEDED


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("failure_kind", list(FAILURES))
@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_an_error_raised_mid_stream_ends_it_with_its_status_and_details(
    probed: Probed, tenant: str, kind: str, failure_kind: str, lines: Lines
) -> None:
    _, code, reason = FAILURES[failure_kind]
    request_id = _request_id()
    outcome = await _call(
        probed.channel, kind, ["a", "b", f"fail:{failure_kind}"], _metadata(tenant, request_id)
    )
    if kind in RESPONSE_STREAMING_KINDS:
        assert outcome.received == [f"{tenant}:a", f"{tenant}:b"]
    got = outcome.failure
    assert (got.code, got.reason) == (code, reason)
    assert got.request_id == request_id
    assert outcome.trailing_request_id == request_id
    if failure_kind == "invalid":
        assert list(got.field_violations) == ["page_size"]
    if failure_kind == "unexpected":
        assert got.message == errors.MESSAGE_INTERNAL
        assert set(got.error_metadata) == {"incident_id"}
    assert outcome.error is not None
    told = f"{outcome.error.details()} {outcome.error.trailing_metadata()}"
    for internal in ("secret", "chat_sessions", "mid-operation", "Traceback", "RuntimeError"):
        assert internal not in told
    line = await lines.line(request_id)
    assert (line["method"], line["tenant"], line["code"]) == (KINDS[kind], tenant, code.name)
    method = KINDS[kind]
    assert probed.sample("sessionmonitoring_rpc_errors_total", method=method, reason=reason) == 1


@pytest.mark.parametrize("kind", RESPONSE_STREAMING_KINDS)
async def test_a_stream_the_handler_aborts_itself_is_logged_with_its_code(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    outcome = await _call(probed.channel, kind, ["a", "abort"], _metadata(tenant, request_id))
    assert outcome.error is not None
    assert outcome.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await lines.line(request_id))["code"] == "FAILED_PRECONDITION"


# --- access log and metrics ------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_a_stream_gets_one_access_line_and_one_count_however_many_messages(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    method = KINDS[kind]
    call = _start(probed.channel, kind, ["a", "b", "hold", "c"], _metadata(tenant, request_id))
    await _holding(probed.probe)
    assert probed.sample("sessionmonitoring_rpc_in_flight") == 1
    assert lines.access(request_id) == []
    probed.probe.release.set()
    outcome = await _finish(kind, call)
    assert outcome.error is None
    line = await lines.line(request_id)
    assert (line["method"], line["tenant"], line["code"]) == (method, tenant, "OK")
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert probed.sample("sessionmonitoring_rpc_calls_total", method=method, code="OK") == 1
    assert probed.sample("sessionmonitoring_rpc_duration_seconds_count", method=method) == 1
    assert probed.sample("sessionmonitoring_rpc_in_flight") == 0


# --- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_a_client_cancelling_a_stream_ends_its_handler(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    call = _start(probed.channel, kind, ["a", "hold"], _metadata(tenant, request_id))
    await _holding(probed.probe)
    assert call.cancel()
    await _ended(probed.probe)
    line = await lines.line(request_id)
    assert (line["method"], line["code"]) == (KINDS[kind], "CANCELLED")
    method = KINDS[kind]
    assert probed.sample("sessionmonitoring_rpc_calls_total", method=method, code="CANCELLED") == 1
    assert probed.sample("sessionmonitoring_rpc_in_flight") == 0


@pytest.mark.parametrize("kind", RESPONSE_STREAMING_KINDS)
async def test_a_message_written_after_the_client_is_gone_ends_the_call_cancelled_not_internal(
    probed: Probed, tenant: str, kind: str, lines: Lines
) -> None:
    request_id = _request_id()
    call = _start(probed.channel, kind, ["a", "linger"], _metadata(tenant, request_id))
    await _holding(probed.probe)
    assert call.cancel()
    await _ended(probed.probe)
    assert (await lines.line(request_id))["code"] == "CANCELLED"
    logged = [r.getMessage() for r in lines.records if r.name == "server.transport.interceptors"]
    assert logged == []
    method = KINDS[kind]
    assert probed.sample("sessionmonitoring_rpc_calls_total", method=method, code="INTERNAL") == 0


async def test_a_cancel_while_a_message_is_being_written_closes_the_generator_at_once(
    probed: Probed, tenant: str, lines: Lines
) -> None:
    # The client never reads, so the handler's generator waits at its yield, under a write the
    # transport cannot finish: the cancel must close it there, before the call is reported.
    request_id = _request_id()
    call = _start(
        probed.channel, "unary-stream-generator", ["flood"], _metadata(tenant, request_id)
    )
    await _holding(probed.probe)
    assert call.cancel()
    await _ended(probed.probe)
    line = await lines.line(request_id)
    assert line["code"] == "CANCELLED"
    order = [
        record.name
        for record in lines.records
        if record.name == probe_logger.name or getattr(record, "request_id", None) == request_id
    ]
    assert order == [probe_logger.name, "server.access"]
