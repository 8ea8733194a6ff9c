"""The Python client (client/, `sessionmonitoring_client`) over real channels.

Against the real server: every RPC, all pages through page tokens, errors with their reason,
violations and request id, tenant and token per client and per call, deadlines. Against a
scripted grpc.aio server on port 0 (no database): the channel's retry policy, counting the
attempts that reach the server. grpcio-testing does not fit either: its fake channel is
synchronous (the client is grpc.aio) and bypasses gRPC core, where service-config retries live.
And the README's example, run as a program against a server holding the demo data.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sessionmonitoring_client import (
    AbortedError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SessionMonitoringClient,
    SessionMonitoringError,
    SessionStatus,
    UnauthenticatedError,
    UnavailableError,
)
from sessionmonitoring_client.retries import RETRY_POLICY, SERVICE
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.engine import create_engine
from server.data.migrate import upgrade_to_head
from server.tools.demo import insert_demo_data
from server.transport.auth import load_policy
from tests.certs import SERVER_HOST, CertificateAuthority
from tests.factories import BASE_TIME, Factory
from tests.helpers import serving

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
QUICKSTART = REPO_ROOT / "client" / "examples" / "quickstart.py"
# Bounds a subprocess or a wait that should take a moment; never measures anything.
WAIT_LIMIT = 30.0
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
CLOSED = SessionStatus.SESSION_STATUS_CLOSED


@pytest.fixture
async def client(grpc_target: str, tenant: str) -> AsyncIterator[SessionMonitoringClient]:
    async with SessionMonitoringClient(grpc_target, tenant=tenant) as open_client:
        yield open_client


# --- the RPCs against the real server -----------------------------------------------------------


async def test_list_sessions_returns_a_page_newest_first_with_exact_totals(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    newest_first = await factory.sessions(tenant, 5)
    page = await client.list_sessions(page=2, page_size=2)
    assert [s.session_id for s in page.sessions] == newest_first[2:4]
    assert (page.pagination.page, page.pagination.total, page.pagination.total_pages) == (2, 5, 3)
    assert all(s.tenant_id == tenant for s in page.sessions)


async def test_list_sessions_sends_every_filter(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    closed, later = {"status": "closed"}, BASE_TIME + timedelta(days=2)
    await factory.session(tenant, "old-closed-web", metadata=closed)
    await factory.session(tenant, "new-closed-web", metadata=closed, created_at=later)
    await factory.session(
        tenant, "new-closed-mail", metadata=closed, created_at=later, channel_type="email"
    )
    await factory.session(tenant, "new-active-web", created_at=later)
    page = await client.list_sessions(
        status=SessionStatus.SESSION_STATUS_CLOSED,
        channel_type="web",
        start_time=BASE_TIME + timedelta(days=1),
        end_time=BASE_TIME + timedelta(days=3),
    )
    assert [s.session_id for s in page.sessions] == ["new-closed-web"]
    assert page.sessions[0].status == SessionStatus.SESSION_STATUS_CLOSED


async def test_iter_sessions_visits_every_page_once_in_order(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    newest_first = await factory.sessions(tenant, 7)
    pages = [page async for page in client.iter_session_pages(page_size=3)]
    assert [len(page.sessions) for page in pages] == [3, 3, 1]
    assert pages[-1].next_page_token == ""
    assert [s.session_id async for s in client.iter_sessions(page_size=3)] == newest_first


async def test_iter_sessions_keeps_its_filters_on_every_page(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    web = await factory.sessions(tenant, 5, channel_type="web")
    await factory.session(tenant, "mail", channel_type="email")
    # A page token is bound to its filters: a later page asked without them would be refused.
    found = [s.session_id async for s in client.iter_sessions(channel_type="web", page_size=2)]
    assert found == web


async def test_iter_sessions_of_a_tenant_with_no_sessions_yields_nothing(
    client: SessionMonitoringClient,
) -> None:
    assert [s async for s in client.iter_sessions()] == []


async def test_get_session_detail_and_iter_messages_read_the_session_page_by_page(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "chat", metadata={"locale": "en"})
    ids = [
        await factory.message(tenant, "chat", content=f"m{i}", created_at=BASE_TIME + timedelta(i))
        for i in range(5)
    ]
    first = await client.get_session_detail("chat", page_size=2)
    assert first.session.session_id == "chat"
    assert first.session.message_count == 5
    assert [m.content for m in first.messages] == ["m0", "m1"]
    assert first.metadata["locale"] == "en"
    assert first.next_page_token
    pages = [page async for page in client.iter_detail_pages("chat", page_size=2)]
    assert [len(page.messages) for page in pages] == [2, 2, 1]
    assert [m.id async for m in client.iter_messages("chat", page_size=2)] == ids


async def test_update_session_status_returns_and_stores_the_new_status(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s", metadata={"keep": 1})
    session = await client.update_session_status("s", CLOSED)
    assert (session.session_id, session.status) == ("s", CLOSED)
    assert session.HasField("end_time")
    stored = await factory.metadata(tenant, "s")
    assert (stored["status"], stored["keep"]) == ("closed", 1)
    again = await client.update_session_status("s", pb.SESSION_STATUS_CLOSED)
    assert again.end_time == session.end_time  # setting the status it has changes nothing


# --- errors from the real server ----------------------------------------------------------------


async def test_a_missing_session_raises_not_found_with_reason_metadata_and_request_id(
    client: SessionMonitoringClient,
) -> None:
    with pytest.raises(NotFoundError) as raised:
        await client.get_session_detail("nobody", request_id="caller-req-1")
    error = raised.value
    assert isinstance(error, SessionMonitoringError)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert (error.reason, error.domain) == ("SESSION_NOT_FOUND", "sessionmonitoring")
    assert error.message == 'session "nobody" not found'
    assert error.metadata["session_id"] == "nobody"
    # The caller's request id is the one the server logged the call under.
    assert error.request_id == "caller-req-1"
    assert ("x-request-id", "caller-req-1") in error.trailing_metadata
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert "SESSION_NOT_FOUND" in str(error)
    assert "caller-req-1" in str(error)


async def test_a_request_id_is_reported_even_when_the_caller_sent_none(
    client: SessionMonitoringClient,
) -> None:
    with pytest.raises(NotFoundError) as raised:
        await client.update_session_status("nobody", CLOSED)
    assert raised.value.request_id is not None
    assert REQUEST_ID.fullmatch(raised.value.request_id)


async def test_bad_fields_raise_invalid_argument_with_one_violation_each(
    client: SessionMonitoringClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.list_sessions(page=-1, page_size=500)
    error = raised.value
    assert error.reason == "INVALID_ARGUMENT"
    assert sorted(v.field for v in error.violations) == ["page", "page_size"]
    assert all(v.description for v in error.violations)


async def test_an_unspecified_status_update_is_an_invalid_argument(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    with pytest.raises(InvalidArgumentError) as raised:
        await client.update_session_status("s", SessionStatus.SESSION_STATUS_UNSPECIFIED)
    assert [v.field for v in raised.value.violations] == ["status"]


async def test_a_malformed_tenant_is_an_invalid_argument_with_its_own_reason(
    client: SessionMonitoringClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.list_sessions(tenant="not a tenant!")
    assert raised.value.reason == "INVALID_TENANT_ID"
    assert raised.value.violations == ()


# --- tenant, token and deadline, per client and per call ----------------------------------------


async def test_the_tenant_of_a_call_overrides_the_clients(
    client: SessionMonitoringClient, factory: Factory, tenant: str
) -> None:
    other = f"{tenant}-other"
    await factory.session(other, "theirs")
    with pytest.raises(NotFoundError):  # the client's tenant has no such session
        await client.get_session_detail("theirs")
    detail = await client.get_session_detail("theirs", tenant=other)
    assert detail.session.tenant_id == other
    assert (await client.list_sessions()).pagination.total == 0  # the client's tenant again


async def test_a_call_without_any_tenant_is_refused_before_it_is_sent(grpc_target: str) -> None:
    async with SessionMonitoringClient(grpc_target) as tenantless:
        with pytest.raises(ValueError, match="no tenant"):
            await tenantless.list_sessions()
        assert (await tenantless.list_sessions(tenant="anyone")).pagination.total == 0


@dataclass(frozen=True)
class PolicyServer:
    """A server whose caller policy binds `token` to one tenant only."""

    target: str
    token: str


@pytest.fixture
async def policy_server(
    database_url: str, tmp_path: Path, tenant: str
) -> AsyncIterator[PolicyServer]:
    token = secrets.token_urlsafe(32)
    path = tmp_path / "callers.toml"
    digest = hashlib.sha256(token.encode()).hexdigest()
    path.write_text(
        f'[[callers]]\nname = "billing"\ntoken_sha256 = ["{digest}"]\ntenants = ["{tenant}"]\n'
    )
    async with serving(database_url, policy=load_policy(path)) as app:
        yield PolicyServer(f"127.0.0.1:{app.port}", token)


async def test_the_clients_token_is_sent_as_a_bearer_token(
    policy_server: PolicyServer, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 2)
    async with SessionMonitoringClient(
        policy_server.target, tenant=tenant, token=policy_server.token
    ) as client:
        assert (await client.list_sessions()).pagination.total == 2
        with pytest.raises(PermissionDeniedError) as raised:
            await client.list_sessions(tenant=f"{tenant}-other")
    assert raised.value.reason == "TENANT_NOT_ALLOWED"


async def test_the_token_of_a_call_overrides_the_clients(
    policy_server: PolicyServer, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 1)
    async with SessionMonitoringClient(policy_server.target, tenant=tenant) as client:
        with pytest.raises(UnauthenticatedError) as raised:
            await client.list_sessions()
        assert raised.value.reason == "UNAUTHENTICATED"
        page = await client.list_sessions(token=policy_server.token)
        assert page.pagination.total == 1
    unknown = secrets.token_urlsafe(32)
    async with SessionMonitoringClient(
        policy_server.target, tenant=tenant, token=unknown
    ) as client:
        assert (await client.list_sessions(token=policy_server.token)).pagination.total == 1
        with pytest.raises(UnauthenticatedError):
            await client.list_sessions()


async def test_credentials_make_the_channel_mutual_tls(
    database_url: str, tmp_path: Path, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 1)
    authority = CertificateAuthority(tmp_path)
    server, caller = authority.server(), authority.client("caller")
    mutual_tls: dict[str, Any] = {
        "tls_cert_file": server.cert_file,
        "tls_key_file": server.key_file,
        "tls_client_ca_file": authority.cert_file,
    }
    credentials = grpc.ssl_channel_credentials(
        root_certificates=authority.cert_pem,
        private_key=caller.key_pem,
        certificate_chain=caller.cert_pem,
    )
    async with serving(database_url, **mutual_tls) as app:
        target = f"{SERVER_HOST}:{app.port}"
        async with SessionMonitoringClient(
            target, tenant=tenant, credentials=credentials
        ) as client:
            assert (await client.list_sessions()).pagination.total == 1
        # The same server refuses a plaintext client: the credentials were what made it work.
        async with SessionMonitoringClient(target, tenant=tenant, deadline=2.0) as plaintext:
            with pytest.raises(UnavailableError):
                await plaintext.list_sessions()


async def _row_locked_while(
    engine: AsyncEngine, tenant: str, session_id: str, call: Awaitable[Any], *, hold: float
) -> Any:
    """Run `call` while the session's row is locked (so its update waits), unlocking after
    `hold` seconds; what `call` returns or raises."""
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        await conn.execute(
            text("SELECT 1 FROM chat_sessions WHERE tenant_id = :t AND session_id = :s FOR UPDATE"),
            {"t": tenant, "s": session_id},
        )
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait({task}, timeout=hold)
        finally:
            await conn.rollback()
        return await task


async def test_the_clients_deadline_bounds_a_call_that_waits(
    grpc_target: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    async with SessionMonitoringClient(grpc_target, tenant=tenant, deadline=0.3) as client:
        update = client.update_session_status("s", CLOSED)
        with pytest.raises(DeadlineExceededError) as raised:
            await _row_locked_while(engine, tenant, "s", update, hold=WAIT_LIMIT)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_the_deadline_of_a_call_overrides_the_clients(
    grpc_target: str, engine: AsyncEngine, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "s")
    async with SessionMonitoringClient(grpc_target, tenant=tenant, deadline=0.3) as client:
        # Held past the client's 0.3 s, well within the call's own 10 s.
        update = client.update_session_status("s", CLOSED, deadline=10.0)
        session = await _row_locked_while(engine, tenant, "s", update, hold=1.0)
    assert session.status == CLOSED


@pytest.mark.parametrize("deadline", [0.0, -1.0, math.inf, math.nan])
async def test_a_deadline_that_is_not_a_positive_time_is_refused(
    client: SessionMonitoringClient, grpc_target: str, deadline: float
) -> None:
    with pytest.raises(ValueError, match="deadline"):
        SessionMonitoringClient(grpc_target, deadline=deadline)
    with pytest.raises(ValueError, match="deadline"):
        await client.list_sessions(deadline=deadline)


# --- retries, against a scripted server ---------------------------------------------------------


@dataclass
class Scripted:
    """A server that fails the first `failing` calls with `code`, then answers; it records the
    metadata of every attempt that reached it."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    failing: float = 0
    delay: float = 0.0
    attempts: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    target: str = ""

    def methods(self) -> list[str]:
        return [method for method, _ in self.attempts]

    def handler(
        self, method: str, response: Any
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = {str(k): str(v) for k, v in (context.invocation_metadata() or ())}
            self.attempts.append((method, metadata))
            await asyncio.sleep(self.delay)
            if len(self.attempts) <= self.failing:
                await context.abort(self.code, f"scripted {self.code.name}")
            return response

        return answer


_RESPONSES: dict[str, tuple[Any, Any, Any]] = {
    "ListSessions": (pb.ListSessionsRequest, pb.ListSessionsResponse, pb.ListSessionsResponse()),
    "GetSessionDetail": (
        pb.GetSessionDetailRequest,
        pb.GetSessionDetailResponse,
        pb.GetSessionDetailResponse(session=pb.Session(session_id="s")),
    ),
    "UpdateSessionStatus": (
        pb.UpdateSessionStatusRequest,
        pb.UpdateSessionStatusResponse,
        pb.UpdateSessionStatusResponse(session=pb.Session(session_id="s")),
    ),
}


@asynccontextmanager
async def scripted_server(script: Scripted) -> AsyncIterator[Scripted]:
    """`script` served by a real grpc.aio server on a free loopback port (its own port, so the
    channel's retry throttling starts afresh: gRPC keeps it per server name)."""
    server = grpc.aio.server()
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            script.handler(method, response),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        for method, (request_type, response_type, response) in _RESPONSES.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    script.target = f"127.0.0.1:{port}"
    try:
        yield script
    finally:
        await server.stop(0)


def _calls(client: SessionMonitoringClient) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "ListSessions": lambda: client.list_sessions(),
        "GetSessionDetail": lambda: client.get_session_detail("s"),
        "UpdateSessionStatus": lambda: client.update_session_status("s", CLOSED),
    }


@pytest.mark.parametrize("method", list(_RESPONSES))
async def test_every_rpc_is_retried_on_unavailable_until_it_succeeds(method: str) -> None:
    async with (
        scripted_server(Scripted(failing=2)) as script,
        SessionMonitoringClient(script.target, tenant="t") as client,
    ):
        await _calls(client)[method]()
    assert script.methods() == [method] * 3


async def test_retries_give_up_after_the_policys_attempts_with_unavailable() -> None:
    async with (
        scripted_server(Scripted(failing=math.inf)) as script,
        SessionMonitoringClient(script.target, tenant="t") as client,
    ):
        with pytest.raises(UnavailableError) as raised:
            await client.list_sessions()
    assert len(script.attempts) == RETRY_POLICY["maxAttempts"] == 4
    assert raised.value.message == "scripted UNAVAILABLE"


async def test_every_attempt_carries_the_calls_metadata() -> None:
    clients, calls = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    async with (
        scripted_server(Scripted(failing=1)) as script,
        SessionMonitoringClient(script.target, tenant="t", token=clients) as client,
    ):
        await client.list_sessions(tenant="u", request_id="r-1")
        await client.list_sessions(token=calls)
    sent = [
        (m["x-tenant-id"], m.get("authorization"), m.get("x-request-id"))
        for _, m in script.attempts
    ]
    assert sent == [
        ("u", f"Bearer {clients}", "r-1"),  # the first attempt failed: the retry sends the same
        ("u", f"Bearer {clients}", "r-1"),
        ("t", f"Bearer {calls}", None),
    ]


@pytest.mark.parametrize(
    ("method", "code", "error"),
    [
        ("ListSessions", grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        ("GetSessionDetail", grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        ("UpdateSessionStatus", grpc.StatusCode.ABORTED, AbortedError),
        ("UpdateSessionStatus", grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    ],
)
async def test_other_failures_are_not_retried(
    method: str, code: grpc.StatusCode, error: type[SessionMonitoringError]
) -> None:
    async with (
        scripted_server(Scripted(code=code, failing=1)) as script,
        SessionMonitoringClient(script.target, tenant="t") as client,
    ):
        with pytest.raises(error) as raised:
            await _calls(client)[method]()
    assert len(script.attempts) == 1
    assert raised.value.code == code


async def test_a_deadline_is_not_retried_and_raises_deadline_exceeded() -> None:
    async with (
        scripted_server(Scripted(delay=1.0)) as script,
        SessionMonitoringClient(script.target, tenant="t", deadline=0.2) as client,
    ):
        with pytest.raises(DeadlineExceededError) as raised:
            await client.list_sessions()
    assert len(script.attempts) == 1
    # Raised by the client itself: the server never answered, so there is no reason or id.
    assert (raised.value.reason, raised.value.request_id) == ("", None)


async def test_retry_false_turns_the_policy_off() -> None:
    async with (
        scripted_server(Scripted(failing=1)) as script,
        SessionMonitoringClient(script.target, tenant="t", retry=False) as client,
    ):
        with pytest.raises(UnavailableError):
            await client.list_sessions()
        await client.list_sessions()
    assert len(script.attempts) == 2


async def test_retries_stop_while_most_calls_of_the_channel_fail() -> None:
    async with (
        scripted_server(Scripted(failing=math.inf)) as script,
        SessionMonitoringClient(script.target, tenant="t") as client,
    ):
        per_call = []
        for _ in range(3):
            before = len(script.attempts)
            with pytest.raises(UnavailableError):
                await client.list_sessions()
            per_call.append(len(script.attempts) - before)
    # Throttling (10 tokens, one per failure, none left to retry with below half): the first call
    # has its 4 attempts, then the channel stops retrying.
    assert per_call == [4, 1, 1]


# --- the README example ---------------------------------------------------------------------


@pytest.fixture
async def demo_target(private_database_url: str) -> AsyncIterator[str]:
    """A server over a database of its own holding the demo tenants, as `make run` serves."""
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    engine = create_engine(private_database_url, pool_size=1, pool_timeout=5, connect_timeout=5)
    try:
        async with engine.begin() as conn:
            await insert_demo_data(conn)
    finally:
        await engine.dispose()
    async with serving(private_database_url, db_pool_size=2, db_pool_timeout=5) as app:
        yield f"127.0.0.1:{app.port}"


async def test_the_quickstart_example_runs_against_the_demo_data(demo_target: str) -> None:
    # What the example should print, asked through the generated stub rather than the client.
    async with grpc.aio.insecure_channel(demo_target) as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        demo = (("x-tenant-id", "demo"),)
        closed: pb.ListSessionsResponse = await stub.ListSessions(
            pb.ListSessionsRequest(status=pb.SESSION_STATUS_CLOSED, page_size=100), metadata=demo
        )
        detail: pb.GetSessionDetailResponse = await stub.GetSessionDetail(
            pb.GetSessionDetailRequest(session_id="demo-session-004"), metadata=demo
        )
    assert len(closed.sessions) > 2, "the example should page (page_size=2) through the demo"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(QUICKSTART),
        demo_target,
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT_LIMIT)
    assert process.returncode == 0, err.decode()
    *lines, last = out.decode().splitlines()
    assert lines == [
        *(f"{s.session_id} {s.channel_type} {s.end_time.ToJsonString()}" for s in closed.sessions),
        f"messages: {len(detail.messages)} tool calls: {len(detail.trace.tools)}",
        "demo-session-005 SESSION_STATUS_CLOSED",
    ]
    reason, request_id = last.split()
    assert reason == "SESSION_NOT_FOUND"
    assert REQUEST_ID.fullmatch(request_id)


def readme_client_example() -> str:
    """The Python block of the README's client section."""
    section = README.read_text().split("## A Python client", 1)
    assert len(section) == 2, "README.md has no '## A Python client' section"
    return section[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_shows_the_quickstart_example_as_it_is_run() -> None:
    assert readme_client_example() == QUICKSTART.read_text()
