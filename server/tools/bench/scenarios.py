"""The calls under load: one request each, built from the dataset's facts, and how to check a
reply (status OK, the expected number of rows, the same bytes as the first reply)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.tools.bench.dataset import Facts
from server.transport.servicer import SessionMonitoringService
from server.transport.tenancy import TENANT_METADATA_KEY

SERVICE_PATH = "/sessionmonitoring.v1.SessionMonitoring/"
PAGE_SIZE = 20
DEEP_PAGE = 5_000
DETAIL_PAGE_SIZE = 100  # the service's default


@dataclass(frozen=True, slots=True)
class Scenario:
    """One request sent over and over."""

    key: str
    title: str
    method: str
    tenant: str
    request: Message
    expected_rows: int
    note: str

    @property
    def path(self) -> str:
        return SERVICE_PATH + self.method

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TENANT_METADATA_KEY, self.tenant),)


def rows(reply: Message) -> int:
    """The rows a reply carries: sessions listed, messages of a detail page, or the session
    an update returned."""
    if isinstance(reply, pb.ListSessionsResponse):
        return len(reply.sessions)
    if isinstance(reply, pb.GetSessionDetailResponse):
        return len(reply.messages)
    if isinstance(reply, pb.UpdateSessionStatusResponse):
        return 1 if reply.HasField("session") else 0
    raise TypeError(type(reply).__name__)


async def call(stub: pb_grpc.SessionMonitoringStub, scenario: Scenario) -> Message:
    """One call of `scenario` through the generated client stub."""
    method: Callable[..., Awaitable[Message]] = getattr(stub, scenario.method)
    return await method(scenario.request, metadata=scenario.metadata, timeout=30)


async def call_in_process(service: SessionMonitoringService, scenario: Scenario) -> Any:
    """One call of `scenario` straight into the servicer (the tenant must be bound)."""
    method: Callable[..., Awaitable[Message]] = getattr(service, scenario.method)
    return await method(scenario.request, None)


def _timestamp(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def deep_page(facts: Facts) -> int:
    """Page 5000, or the middle page when the big tenant has fewer pages (quick runs)."""
    pages = facts.big.sessions // PAGE_SIZE
    return max(2, min(DEEP_PAGE, pages // 2))


def build(facts: Facts, deep_page_token: str | None) -> list[Scenario]:
    """Every scenario; the page-token one needs the token that leads to `deep_page(facts)`."""
    big = facts.big.tenant_id
    page = deep_page(facts)
    list_request = pb.ListSessionsRequest
    scenarios = [
        Scenario(
            "list_first",
            "List: page 1",
            "ListSessions",
            big,
            list_request(page_size=PAGE_SIZE),
            min(PAGE_SIZE, facts.big.sessions),
            f"{big}, {facts.big.sessions:,} sessions, newest first",
        ),
        Scenario(
            "list_page_number",
            f"List: page {page:,} by number",
            "ListSessions",
            big,
            list_request(page_size=PAGE_SIZE, page=page),
            PAGE_SIZE,
            f"page={page}: rows {(page - 1) * PAGE_SIZE + 1:,}-{page * PAGE_SIZE:,}",
        ),
        Scenario(
            "list_page_token",
            f"List: page {page:,} by token",
            "ListSessions",
            big,
            list_request(page_size=PAGE_SIZE, page_token=deep_page_token or ""),
            PAGE_SIZE,
            f"the next_page_token of page {page - 1:,} (fetched by number): same rows as above",
        ),
        Scenario(
            "list_status",
            "List: status CLOSED",
            "ListSessions",
            big,
            list_request(page_size=PAGE_SIZE, status=pb.SESSION_STATUS_CLOSED),
            min(PAGE_SIZE, facts.closed_sessions),
            f"{facts.closed_sessions:,} closed sessions match",
        ),
        Scenario(
            "list_time_range",
            "List: 7-day window",
            "ListSessions",
            big,
            list_request(
                page_size=PAGE_SIZE,
                start_time=_timestamp(facts.window_start),
                end_time=_timestamp(facts.window_end),
            ),
            min(PAGE_SIZE, facts.window_sessions),
            f"{facts.window_start:%Y-%m-%d %H:%M} to {facts.window_end:%Y-%m-%d %H:%M} UTC, "
            f"{facts.window_sessions:,} sessions match",
        ),
        Scenario(
            "list_channel",
            f"List: channel {facts.channel}",
            "ListSessions",
            big,
            list_request(page_size=PAGE_SIZE, channel_type=facts.channel),
            min(PAGE_SIZE, facts.channel_sessions),
            f"{facts.channel_sessions:,} sessions match",
        ),
        Scenario(
            "list_small_tenant",
            "List: small tenant",
            "ListSessions",
            facts.small.tenant_id,
            list_request(page_size=PAGE_SIZE),
            min(PAGE_SIZE, facts.small.sessions),
            f"{facts.small.tenant_id}, {facts.small.sessions:,} sessions",
        ),
        Scenario(
            "detail",
            "Detail: ordinary session",
            "GetSessionDetail",
            big,
            pb.GetSessionDetailRequest(session_id=facts.ordinary_session),
            min(DETAIL_PAGE_SIZE, facts.ordinary_messages),
            f"{facts.ordinary_session}, {facts.ordinary_messages} messages, all on one page",
        ),
        Scenario(
            "detail_huge",
            "Detail: huge session, page 1",
            "GetSessionDetail",
            big,
            pb.GetSessionDetailRequest(session_id=facts.huge_session),
            min(DETAIL_PAGE_SIZE, facts.huge_messages),
            f"{facts.huge_session}, {facts.huge_messages:,} messages, first {DETAIL_PAGE_SIZE}",
        ),
        Scenario(
            "update_noop",
            "Update: CLOSED again",
            "UpdateSessionStatus",
            big,
            pb.UpdateSessionStatusRequest(
                session_id=facts.closed_session, status=pb.SESSION_STATUS_CLOSED
            ),
            1,
            f"{facts.closed_session} is already closed: the UPDATE matches no row, the session "
            "is re-read and returned (h2load repeats one body, so every call but a first "
            "would be a no-op anyway)",
        ),
    ]
    for tenant in (facts.million, facts.ten_thousand):
        if tenant is not None:
            scenarios.append(
                Scenario(
                    f"list_{tenant.tenant_id}",
                    f"List: page 1, {tenant.sessions:,}-session tenant",
                    "ListSessions",
                    tenant.tenant_id,
                    list_request(page_size=PAGE_SIZE),
                    min(PAGE_SIZE, tenant.sessions),
                    f"{tenant.tenant_id}: tenant size comparison",
                )
            )
    return scenarios
