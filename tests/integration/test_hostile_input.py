"""Hypothesis-made hostile fields and metadata via a real server: client errors or own rows only."""

from __future__ import annotations

import asyncio
import base64
import operator
import queue
import threading
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message as ProtoMessage
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.data.engine import create_engine
from server.domain.filters import SessionFilters
from server.domain.time_keys import is_storable
from server.transport import errors, page_tokens
from server.transport.tenancy import TENANT_ID_PATTERN
from tests import forged_tokens
from tests.factories import BASE_TIME, Factory
from tests.helpers import failure, serving
from tests.tenant_scope import is_tenant_scoped

T = TypeVar("T")
Metadata = list[tuple[str, str | bytes]]

MAX_REQUEST_BYTES = 65536
CALL_TIMEOUT = 30.0
SESSIONS_PER_TENANT = 12
MESSAGES_IN_FIRST_SESSION = 5
SEEDED_IDS = [f"s-{index:05d}" for index in range(SESSIONS_PER_TENANT)]
SERVER_ERROR_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
ALLOWED_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
# Internals that must never reach a caller, whatever it sent.
LEAKS = ("SELECT", "UPDATE ", "Traceback", "asyncpg", "sqlalchemy")

ODD_PIECES = [
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\u0085",
    "\u200b",
    "\u200f",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\U0001f600",
    "\U0001f469\u200d\U0001f4bb",
    "'",
    '"',
    "\\",
    "%",
    "_",
    "*",
    "s-00000",
]

# The Timestamp range is 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# --- A server of its own, on a thread with its own event loop ----------------------------------
#
# Hypothesis drives plain synchronous tests, and the shared server lives on pytest-asyncio's loop,
# which does not run during a synchronous test. This server runs on a loop that always does.


class HostileServer:
    """The thread-hosted server, its seeded tenants and what its engine issued."""

    def __init__(
        self,
        *,
        target: str,
        owners: tuple[str, str],
        bystander: str,
        loop: asyncio.AbstractEventLoop,
        factory: Factory,
        statements: list[str],
        bystander_metadata: dict[str, Any],
    ) -> None:
        self.target = target
        self.owners = owners
        self.bystander = bystander
        self.loop = loop
        self.factory = factory
        self.statements = statements
        self.bystander_metadata = bystander_metadata
        self.tokens: dict[str, list[str]] = {}

    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"HostileServer({self.target}, owners={self.owners})"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


def new_tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def seeded_metadata(index: int, tenant: str) -> dict[str, Any] | None:
    shapes: list[dict[str, Any] | None] = [
        None,
        {"status": "active", "owner": tenant},
        {"status": "closed", "endTime": "2026-01-02T00:00:00Z", "owner": tenant},
        {"status": "expired", "owner": tenant},
    ]
    return shapes[index % len(shapes)]


async def seed(factory: Factory, tenant: str) -> dict[str, Any]:
    """The same session ids for every tenant, each session's metadata naming its owner."""
    stored = {}
    for index, session_id in enumerate(SEEDED_IDS):
        metadata = seeded_metadata(index, tenant)
        await factory.session(
            tenant,
            session_id,
            created_at=BASE_TIME + timedelta(minutes=index),
            metadata=metadata,
        )
        stored[session_id] = metadata
    for index in range(MESSAGES_IN_FIRST_SESSION):
        await factory.message(
            tenant,
            SEEDED_IDS[0],
            role="assistant" if index % 2 else "user",
            content=f"{tenant}: message {index}",
            metadata={"retrieval": [{"source": tenant, "content": tenant}]},
            created_at=BASE_TIME + timedelta(seconds=index),
        )
    return stored


async def host(database_url: str, started: queue.Queue[Any]) -> None:
    announced = False
    try:
        engine = create_engine(database_url, pool_size=5, pool_timeout=10, connect_timeout=10)
        statements: list[str] = []

        try:
            factory = Factory(engine)
            owners = (new_tenant("owner"), new_tenant("owner"))
            bystander = new_tenant("bystander")
            for owner in owners:
                await seed(factory, owner)
            bystander_metadata = await seed(factory, bystander)
            stop = asyncio.Event()
            # Only what the server issues is recorded (and checked as issued, like every test
            # server's); the seeding INSERTs are ours.
            async with serving(
                database_url, db_pool_size=5, db_pool_timeout=10, statements=statements
            ) as app:
                server = HostileServer(
                    target=f"127.0.0.1:{app.port}",
                    owners=owners,
                    bystander=bystander,
                    loop=asyncio.get_running_loop(),
                    factory=factory,
                    statements=statements,
                    bystander_metadata=bystander_metadata,
                )
                started.put((server, stop))
                announced = True
                await stop.wait()
        finally:
            await engine.dispose()
    except BaseException as error:
        if not announced:
            started.put(error)
        raise


@pytest.fixture(scope="module")
def hostile_server(database_url: str) -> Iterator[HostileServer]:
    """A real server on a background thread, over two seeded owners and one bystander tenant."""
    started: queue.Queue[Any] = queue.Queue()
    thread = threading.Thread(
        target=lambda: asyncio.run(host(database_url, started)), name="hostile-server", daemon=True
    )
    thread.start()
    item = started.get(timeout=120)
    if isinstance(item, BaseException):
        raise item
    server, stop = cast(tuple[HostileServer, asyncio.Event], item)
    try:
        yield server
    finally:
        server.loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)


@pytest.fixture(scope="module")
def sync_stub(hostile_server: HostileServer) -> Iterator[pb_grpc.SessionMonitoringStub]:
    """A synchronous client, usable from hypothesis' plain test functions."""
    with grpc.insecure_channel(hostile_server.target) as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        for owner in hostile_server.owners:
            md = [("x-tenant-id", owner)]
            listed = stub.ListSessions(pb.ListSessionsRequest(page_size=2), metadata=md)
            detail = stub.GetSessionDetail(
                pb.GetSessionDetailRequest(session_id=SEEDED_IDS[0], page_size=2), metadata=md
            )
            assert listed.next_page_token
            assert detail.next_page_token
            hostile_server.tokens.setdefault("sessions", []).append(listed.next_page_token)
            hostile_server.tokens.setdefault("messages", []).append(detail.next_page_token)
        yield stub


# --- Strategies -------------------------------------------------------------------------------

odd_text = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(ODD_PIECES)), max_size=120
).map("".join)
# Built by repetition so generating them is cheap; sizes straddle the 64 KiB request limit.
huge_text = st.builds(
    operator.mul,
    st.sampled_from(["a", "\u00e9", "\U0001f600", "\x00"]),
    st.sampled_from([256, 65_000, 65_530, 70_000, 1_048_576]),
)
any_text = st.one_of(odd_text, huge_text, st.sampled_from(SEEDED_IDS))
int32s = st.one_of(
    st.sampled_from([INT32_MIN, -1, 0, 1, 2, 3, 99, 100, 101, 999, 1000, 1001, INT32_MAX]),
    st.integers(INT32_MIN, INT32_MAX),
)
enum_numbers = st.one_of(st.integers(0, 4), st.integers(INT32_MIN, INT32_MAX))
timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.one_of(
        st.sampled_from(
            [INT64_MIN, MIN_SECONDS - 1, MIN_SECONDS, 0, MAX_SECONDS, MAX_SECONDS + 1, INT64_MAX]
        ),
        st.integers(MIN_SECONDS, MAX_SECONDS),
        st.integers(INT64_MIN, INT64_MAX),
    ),
    nanos=st.one_of(
        st.sampled_from([INT32_MIN, -1, 0, 999, 1000, 999_999_999, 1_000_000_000, INT32_MAX]),
        st.integers(INT32_MIN, INT32_MAX),
    ),
)
printable_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))
valid_tenants = st.from_regex(TENANT_ID_PATTERN, fullmatch=True)


def token_strategy(real: Sequence[str]) -> st.SearchStrategy[str]:
    """Empty, genuine (maybe another tenant's), mangled, random and oversized tokens."""
    mangled = st.builds(
        lambda token, position, char: (
            token[: position % len(token)] + char + token[position % len(token) + 1 :]
        ),
        st.sampled_from(real),
        st.integers(0, 10_000),
        st.characters(codec="utf-8"),
    )
    return st.one_of(
        st.just(""),
        st.sampled_from(real),
        mangled,
        st.sampled_from(real).map(lambda token: token + "=="),
        odd_text,
        st.binary(max_size=1500).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.binary(max_size=1500).map(lambda raw: base64.b64encode(raw).decode()),
        huge_text,
    )


@dataclass(frozen=True)
class CallerMetadata:
    """Call metadata and the tenant the server should act for (None: it must refuse)."""

    metadata: Metadata
    tenant: str | None


def caller_metadata(owners: Sequence[str]) -> st.SearchStrategy[CallerMetadata]:
    def one_tenant(value: str) -> CallerMetadata:
        valid = bool(TENANT_ID_PATTERN.fullmatch(value))
        return CallerMetadata([("x-tenant-id", value)], value if valid else None)

    tenants = st.one_of(
        st.sampled_from(owners).map(one_tenant),
        valid_tenants.map(one_tenant),
        printable_ascii.map(one_tenant),
        st.just(CallerMetadata([], None)),
        st.builds(
            lambda first, second: CallerMetadata(
                [("x-tenant-id", first), ("x-tenant-id", second)], None
            ),
            st.sampled_from(owners),
            st.one_of(st.sampled_from(owners), valid_tenants),
        ),
        st.builds(
            lambda raw, with_text: CallerMetadata(
                [*([("x-tenant-id", owners[0])] if with_text else []), ("x-tenant-id-bin", raw)],
                None,
            ),
            st.binary(max_size=64),
            st.booleans(),
        ),
    )
    noise = st.lists(
        st.tuples(st.sampled_from(["x-request-id", "authorization", "x-other"]), printable_ascii),
        max_size=2,
    )
    return st.builds(
        lambda chosen, extra: CallerMetadata([*chosen.metadata, *extra], chosen.tenant),
        tenants,
        noise,
    )


# --- Invariants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    response: Any = None
    error: grpc.RpcError | None = None


def call(method: Any, request: ProtoMessage, metadata: Metadata) -> Outcome:
    try:
        response = method(request, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        return Outcome(cast(grpc.Call, error).code(), error=error)
    return Outcome(grpc.StatusCode.OK, response=response)


def check(outcome: Outcome, request: ProtoMessage, caller: CallerMetadata) -> None:
    """The invariants every call keeps, whatever it sent."""
    if request.ByteSize() > MAX_REQUEST_BYTES:
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        return
    assert outcome.code not in SERVER_ERROR_CODES, describe(outcome)
    assert outcome.code in ALLOWED_CODES, describe(outcome)
    if caller.tenant is None:
        assert outcome.code in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT}
    if outcome.error is not None:
        details = failure(cast(grpc.aio.AioRpcError, outcome.error))
        if caller.tenant is None:
            assert details.reason in {
                errors.REASON_MISSING_TENANT_ID,
                errors.REASON_INVALID_TENANT_ID,
            }
        for leak in LEAKS:
            assert leak not in details.message


def describe(outcome: Outcome) -> str:
    if outcome.error is None:
        return outcome.code.name
    error = cast(grpc.Call, outcome.error)
    return f"{outcome.code.name}: {error.details()}"


def assert_owned(sessions: Iterable[pb.Session], tenant: str) -> None:
    for session in sessions:
        assert session.tenant_id == tenant


HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- Tests ------------------------------------------------------------------------------------


@HYPOTHESIS
@given(data=st.data())
def test_list_sessions_answers_any_request_with_a_client_error_or_the_callers_own_rows(
    hostile_server: HostileServer, sync_stub: pb_grpc.SessionMonitoringStub, data: st.DataObject
) -> None:
    caller = data.draw(caller_metadata(hostile_server.owners), label="caller")
    request = pb.ListSessionsRequest(
        status=cast(pb.SessionStatus, data.draw(enum_numbers, label="status")),
        page=data.draw(int32s, label="page"),
        page_size=data.draw(int32s, label="page_size"),
        page_token=data.draw(token_strategy(hostile_server.tokens["sessions"]), label="page_token"),
    )
    for name in ("start_time", "end_time"):
        if data.draw(st.booleans(), label=f"has {name}"):
            getattr(request, name).CopyFrom(data.draw(timestamps, label=name))
    if data.draw(st.booleans(), label="has channel_type"):
        request.channel_type = data.draw(any_text, label="channel_type")

    outcome = call(sync_stub.ListSessions, request, caller.metadata)

    check(outcome, request, caller)
    if outcome.response is not None:
        assert caller.tenant is not None
        assert_owned(outcome.response.sessions, caller.tenant)
        if caller.tenant not in hostile_server.owners:
            assert outcome.response.pagination.total == 0


@HYPOTHESIS
@given(data=st.data())
def test_session_detail_answers_any_request_with_a_client_error_or_the_callers_own_session(
    hostile_server: HostileServer, sync_stub: pb_grpc.SessionMonitoringStub, data: st.DataObject
) -> None:
    caller = data.draw(caller_metadata(hostile_server.owners), label="caller")
    request = pb.GetSessionDetailRequest(
        session_id=data.draw(any_text, label="session_id"),
        page_size=data.draw(int32s, label="page_size"),
        page_token=data.draw(token_strategy(hostile_server.tokens["messages"]), label="page_token"),
    )

    outcome = call(sync_stub.GetSessionDetail, request, caller.metadata)

    check(outcome, request, caller)
    if outcome.response is not None:
        assert caller.tenant is not None
        response = outcome.response
        assert response.session.tenant_id == caller.tenant
        assert response.session.session_id == request.session_id
        for message in response.messages:
            assert message.content.startswith(f"{caller.tenant}: ")
        for hit in response.trace.retrieval:
            assert hit.source == caller.tenant


@HYPOTHESIS
@given(data=st.data())
def test_status_update_answers_any_request_with_a_client_error_or_the_callers_own_session(
    hostile_server: HostileServer, sync_stub: pb_grpc.SessionMonitoringStub, data: st.DataObject
) -> None:
    caller = data.draw(caller_metadata(hostile_server.owners), label="caller")
    request = pb.UpdateSessionStatusRequest(
        session_id=data.draw(any_text, label="session_id"),
        status=cast(pb.SessionStatus, data.draw(enum_numbers, label="status")),
    )

    outcome = call(sync_stub.UpdateSessionStatus, request, caller.metadata)

    check(outcome, request, caller)
    if outcome.response is not None:
        session = outcome.response.session
        assert session.tenant_id == caller.tenant
        assert session.session_id == request.session_id
        assert session.status == request.status


YEAR_ONE_MICROS = -62_135_596_800_000_000
forged_keys = st.one_of(
    odd_text,
    st.sampled_from(SEEDED_IDS),
    st.integers(0, 2**64).map(str),
    st.just("9" * 1024),
)
forged_micros = st.one_of(
    st.sampled_from([INT64_MIN, YEAR_ONE_MICROS, 0, 253_402_300_799_999_999, INT64_MAX]),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(YEAR_ONE_MICROS, 253_402_300_799_999_999),
)
# The offset numbers the page (offset // page_size + 1, an int32): 0 and below, and past page
# 2**31 - 1 at the call's page size, are refused; anything between is served.
forged_offsets = st.one_of(
    st.sampled_from(
        [INT64_MIN, -1, 0, 1, 2, 3, INT32_MAX - 1, INT32_MAX, INT32_MAX * 100, INT64_MAX]
    ),
    st.integers(1, INT32_MAX * 1000),
    st.integers(INT64_MIN, INT64_MAX),
)
# What a forged token may be refused for once its scope matches: never a scope mismatch or an
# older version, which would mean the forge below is not what the server reads.
FORGED_REFUSALS = {page_tokens.NOT_A_PAGE_TOKEN, page_tokens.PAST_LAST_PAGE}


def well_formed(*, micros: int, offset: int, key: str, page_size: int) -> bool:
    """Whether the server must serve a forged token with these fields and a matching scope."""
    return (
        is_storable(micros)
        and offset >= 1
        and offset // page_size < INT32_MAX
        and "\x00" not in key
        and len(key.encode()) <= 1024
    )


def check_forged(outcome: Outcome, *, served: bool) -> None:
    """A forged token with a matching scope is served when well formed, else refused as one."""
    if served:
        assert outcome.code == grpc.StatusCode.OK, describe(outcome)
        return
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, describe(outcome)
    violations = failure(cast(grpc.aio.AioRpcError, outcome.error)).field_violations
    assert set(violations) == {"page_token"}, violations
    assert violations["page_token"] in FORGED_REFUSALS, violations


@HYPOTHESIS
@given(
    owner=st.sampled_from([0, 1]),
    micros=forged_micros,
    offset=forged_offsets,
    key=forged_keys,
    page_size=st.sampled_from([0, 1, 2, 5]),
)
# Known edges, tried on every run: the last page number and one past it at the call's page
# size, an offset of 0, and a key PostgreSQL cannot hold.
@example(owner=0, micros=YEAR_ONE_MICROS, offset=INT32_MAX, key="s-99999", page_size=1)
@example(owner=0, micros=YEAR_ONE_MICROS, offset=INT32_MAX - 1, key="s-99999", page_size=1)
@example(owner=0, micros=YEAR_ONE_MICROS, offset=INT32_MAX * 5 - 1, key="s-99999", page_size=5)
@example(owner=0, micros=YEAR_ONE_MICROS, offset=INT64_MAX, key="s-99999", page_size=5)
@example(owner=0, micros=0, offset=0, key="s-1", page_size=1)
@example(owner=0, micros=0, offset=2, key="s-\x00", page_size=1)
@example(owner=1, micros=253_402_300_799_999_999, offset=3, key="s-", page_size=1)
def test_a_forged_session_page_token_with_a_matching_scope_is_served_or_refused_cleanly(
    hostile_server: HostileServer,
    sync_stub: pb_grpc.SessionMonitoringStub,
    owner: int,
    micros: int,
    offset: int,
    key: str,
    page_size: int,
) -> None:
    tenant = hostile_server.owners[owner]
    filters = SessionFilters(None, None, None, None)
    token = forged_tokens.forge_sessions(tenant, filters, micros=micros, offset=offset, key=key)
    request = pb.ListSessionsRequest(page_size=page_size, page_token=token)
    caller = CallerMetadata([("x-tenant-id", tenant)], tenant)

    outcome = call(sync_stub.ListSessions, request, caller.metadata)

    check(outcome, request, caller)
    size = page_size or 20
    check_forged(outcome, served=well_formed(micros=micros, offset=offset, key=key, page_size=size))
    if outcome.response is not None:
        assert_owned(outcome.response.sessions, tenant)
        assert outcome.response.pagination.page == offset // size + 1


@HYPOTHESIS
@given(
    owner=st.sampled_from([0, 1]),
    micros=forged_micros,
    offset=forged_offsets,
    key=forged_keys,
    page_size=st.sampled_from([0, 1, 2]),
)
# Known edges, tried on every run: offsets at and past the deepest a token may hold.
@example(owner=0, micros=YEAR_ONE_MICROS, offset=INT32_MAX, key="0", page_size=1)
@example(owner=1, micros=YEAR_ONE_MICROS, offset=INT32_MAX - 1, key="0", page_size=1)
@example(owner=1, micros=YEAR_ONE_MICROS, offset=INT64_MAX, key="0", page_size=2)
def test_a_forged_message_page_token_with_a_matching_scope_is_served_or_refused_cleanly(
    hostile_server: HostileServer,
    sync_stub: pb_grpc.SessionMonitoringStub,
    owner: int,
    micros: int,
    offset: int,
    key: str,
    page_size: int,
) -> None:
    tenant = hostile_server.owners[owner]
    session_id = SEEDED_IDS[0]
    token = forged_tokens.forge_messages(tenant, session_id, micros=micros, offset=offset, key=key)
    request = pb.GetSessionDetailRequest(
        session_id=session_id, page_size=page_size, page_token=token
    )
    caller = CallerMetadata([("x-tenant-id", tenant)], tenant)

    outcome = call(sync_stub.GetSessionDetail, request, caller.metadata)

    check(outcome, request, caller)
    # The detail query reads the key as a message id, a bigint.
    message_id = key.isascii() and key.isdigit() and int(key) < 2**63
    well = well_formed(micros=micros, offset=offset, key=key, page_size=page_size or 100)
    check_forged(outcome, served=well and message_id)
    if outcome.response is not None:
        assert outcome.response.session.tenant_id == tenant
        for message in outcome.response.messages:
            assert message.content.startswith(f"{tenant}: ")


def test_the_tenant_nobody_called_as_is_untouched_and_every_statement_was_tenant_scoped(
    hostile_server: HostileServer,
) -> None:
    # Runs after the property tests of this module (pytest keeps file order).
    factory = hostile_server.factory
    for session_id, seeded in hostile_server.bystander_metadata.items():
        stored = hostile_server.run(factory.metadata(hostile_server.bystander, session_id))
        assert stored == seeded
    # Each statement was checked as it was issued; this proves the server's were observed at all.
    assert any("chat_sessions" in s for s in hostile_server.statements)
    assert all(is_tenant_scoped(s) for s in hostile_server.statements)
