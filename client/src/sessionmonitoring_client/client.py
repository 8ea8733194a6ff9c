"""SessionMonitoringClient: the sessionmonitoring.v1 API over one grpc.aio channel."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from sessionmonitoring_client.errors import REQUEST_ID_KEY, error_from_rpc
from sessionmonitoring_client.retries import service_config_json

TENANT_KEY = "x-tenant-id"
AUTHORIZATION_KEY = "authorization"
DEFAULT_DEADLINE = 10.0

_Response = TypeVar("_Response")


# The generated enum itself, so that a status given and a status returned compare (and
# type-check) alike: SessionStatus.SESSION_STATUS_CLOSED, SessionStatus.Name(session.status).
SessionStatus = pb.SessionStatus


class SessionMonitoringClient:
    """A client of the SessionMonitoring service; use it as an async context manager.

        async with SessionMonitoringClient("host:port", tenant="acme") as client:
            page = await client.list_sessions(status=SessionStatus.SESSION_STATUS_ACTIVE)

    Every call acts for one tenant (sent as `x-tenant-id`) and may carry a bearer token (sent as
    `authorization: Bearer <token>`): set either for the client, or per call with `tenant=` and
    `token=`. A call's deadline, in seconds, is `deadline` (per call, or the client's; None on
    the client means none, and the server's own ceiling applies). `request_id=` sends an
    `x-request-id` the server logs the call under and echoes in errors.

    Without `credentials` the channel is plaintext, tokens included: pass
    `grpc.ssl_channel_credentials(...)` anywhere but on a trusted network. `options` are extra
    gRPC channel options (e.g. `("grpc.max_receive_message_length", ...)` for `full_content`);
    they win over the client's own. `retry=False` turns off the retry policy (see
    `sessionmonitoring_client.retries`).

    Failed calls raise a `SessionMonitoringError` subclass (`NotFoundError`, ...). Create the
    client inside a coroutine: its channel belongs to the running event loop.
    """

    def __init__(
        self,
        target: str,
        *,
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = DEFAULT_DEADLINE,
        credentials: grpc.ChannelCredentials | None = None,
        retry: bool = True,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        _check_deadline(deadline)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "create SessionMonitoringClient inside a coroutine: its grpc.aio channel "
                "belongs to the running event loop"
            ) from None
        self._tenant = tenant
        self._token = token
        self._deadline = deadline
        merged = dict(_channel_options(retry=retry))
        merged.update(options)
        channel_options = list(merged.items())
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        # The generated stub carries no annotations; each call below states its response type.
        self._stub: Any = pb_grpc.SessionMonitoringStub(self._channel)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (e.g. for grpc.health.v1 checks)."""
        return self._channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still running get `grace` seconds, then are cancelled."""
        await self._channel.close(grace)

    # --- ListSessions ---------------------------------------------------------------------------

    async def list_sessions(
        self,
        *,
        status: pb.SessionStatus = pb.SESSION_STATUS_UNSPECIFIED,
        channel_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page: int = 0,
        page_size: int = 0,
        page_token: str = "",
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> pb.ListSessionsResponse:
        """One page of the tenant's sessions, newest first, with exact `pagination` totals and
        the `next_page_token` (empty on the last page).

        `status` UNSPECIFIED keeps every status; `start_time`/`end_time` bound the created time,
        inclusive (naive datetimes are taken as UTC); `page` is 1-based (0 = 1) and
        `page_size` 1-100 (0 = 20); `page_token` continues after the page that returned it.
        """
        request = _list_request(
            status=status,
            channel_type=channel_type,
            start_time=start_time,
            end_time=end_time,
            page=page,
            page_size=page_size,
            page_token=page_token,
        )
        response: pb.ListSessionsResponse = await self._call(
            self._stub.ListSessions, request, tenant, token, deadline, request_id
        )
        return response

    async def iter_session_pages(
        self,
        *,
        status: pb.SessionStatus = pb.SESSION_STATUS_UNSPECIFIED,
        channel_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[pb.ListSessionsResponse]:
        """Every page of the filtered sessions, following page tokens (from `page_token`, or
        the first page), each call with its own deadline. Keyset tokens never skip or repeat a
        row, however many are inserted meanwhile."""
        while True:
            response = await self.list_sessions(
                status=status,
                channel_type=channel_type,
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=page_token,
                tenant=tenant,
                token=token,
                deadline=deadline,
                request_id=request_id,
            )
            yield response
            if not response.next_page_token:
                return
            page_token = response.next_page_token

    async def iter_sessions(
        self,
        *,
        status: pb.SessionStatus = pb.SESSION_STATUS_UNSPECIFIED,
        channel_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[pb.Session]:
        """Every session matching the filters, newest first, fetched page by page
        (`iter_session_pages`); `page_size` sets how many each call fetches."""
        async for response in self.iter_session_pages(
            status=status,
            channel_type=channel_type,
            start_time=start_time,
            end_time=end_time,
            page_size=page_size,
            page_token=page_token,
            tenant=tenant,
            token=token,
            deadline=deadline,
            request_id=request_id,
        ):
            for session in response.sessions:
                yield session

    # --- GetSessionDetail -----------------------------------------------------------------------

    async def get_session_detail(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        full_content: bool = False,
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> pb.GetSessionDetailResponse:
        """The session, one page of its messages (oldest first; `page_size` 1-1000, 0 = 100),
        the trace built from that page's assistant messages, its metadata and the
        `next_page_token`. `full_content` returns messages whole, however large: raise the
        channel's `grpc.max_receive_message_length` (`options=`) to match."""
        request = pb.GetSessionDetailRequest(
            session_id=session_id,
            page_size=page_size,
            page_token=page_token,
            full_content=full_content,
        )
        response: pb.GetSessionDetailResponse = await self._call(
            self._stub.GetSessionDetail, request, tenant, token, deadline, request_id
        )
        return response

    async def iter_detail_pages(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        full_content: bool = False,
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[pb.GetSessionDetailResponse]:
        """Every page of the session's detail (messages with their page's trace), following
        page tokens, each call with its own deadline."""
        while True:
            response = await self.get_session_detail(
                session_id,
                page_size=page_size,
                page_token=page_token,
                full_content=full_content,
                tenant=tenant,
                token=token,
                deadline=deadline,
                request_id=request_id,
            )
            yield response
            if not response.next_page_token:
                return
            page_token = response.next_page_token

    async def iter_messages(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        full_content: bool = False,
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[pb.Message]:
        """Every message of the session, oldest first, fetched page by page
        (`iter_detail_pages`, whose pages also carry the trace)."""
        async for response in self.iter_detail_pages(
            session_id,
            page_size=page_size,
            full_content=full_content,
            tenant=tenant,
            token=token,
            deadline=deadline,
            request_id=request_id,
        ):
            for message in response.messages:
                yield message

    # --- UpdateSessionStatus --------------------------------------------------------------------

    async def update_session_status(
        self,
        session_id: str,
        status: pb.SessionStatus,
        *,
        tenant: str | None = None,
        token: str | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> pb.Session:
        """Set the session's status (not UNSPECIFIED); returns the session as it is afterwards.
        CLOSED and EXPIRED stamp its end time; setting the status it has changes nothing."""
        request = pb.UpdateSessionStatusRequest(session_id=session_id, status=status)
        response: pb.UpdateSessionStatusResponse = await self._call(
            self._stub.UpdateSessionStatus, request, tenant, token, deadline, request_id
        )
        return response.session

    # --- plumbing -------------------------------------------------------------------------------

    async def _call(
        self,
        method: Callable[..., Awaitable[_Response]],
        request: Any,
        tenant: str | None,
        token: str | None,
        deadline: float | None,
        request_id: str | None,
    ) -> _Response:
        metadata = self._metadata(tenant, token, request_id)
        _check_deadline(deadline)
        timeout = self._deadline if deadline is None else deadline
        try:
            return await method(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from error

    def _metadata(
        self, tenant: str | None, token: str | None, request_id: str | None
    ) -> tuple[tuple[str, str], ...]:
        tenant = tenant or self._tenant
        if not tenant:
            raise ValueError("no tenant: pass tenant= to SessionMonitoringClient or to the call")
        metadata = [(TENANT_KEY, tenant)]
        token = token or self._token
        if token:
            metadata.append((AUTHORIZATION_KEY, f"Bearer {token}"))
        if request_id:
            metadata.append((REQUEST_ID_KEY, request_id))
        return tuple(metadata)


def _list_request(
    *,
    status: pb.SessionStatus,
    channel_type: str | None,
    start_time: datetime | None,
    end_time: datetime | None,
    page: int,
    page_size: int,
    page_token: str,
) -> pb.ListSessionsRequest:
    request = pb.ListSessionsRequest(
        status=status,
        channel_type=channel_type,
        page=page,
        page_size=page_size,
        page_token=page_token,
    )
    if start_time is not None:
        request.start_time.CopyFrom(_timestamp(start_time))
    if end_time is not None:
        request.end_time.CopyFrom(_timestamp(end_time))
    return request


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)  # naive datetimes are taken as UTC
    return stamp


def _channel_options(*, retry: bool) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 1)]
    if retry:
        options.append(("grpc.service_config", service_config_json()))
    return options


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and not (deadline > 0 and math.isfinite(deadline)):
        raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
