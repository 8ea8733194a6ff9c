"""The SessionMonitoring servicer: validate the request, run the queries, convert the rows.

The tenant comes from `tenancy.current_tenant()`, bound by the interceptor; errors are raised as
`server.transport.errors` exceptions and translated there too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.data.engine import is_retryable_conflict
from server.data.rows import SessionRow
from server.data.session_detail import session_detail
from server.data.session_list import list_page
from server.data.statements import Database
from server.data.status_update import set_session_status
from server.domain import counting
from server.transport import convert, detail_reply, page_tokens, validation, watch_stream
from server.transport.errors import (
    ConflictError,
    SessionMetadataNotObjectError,
    session_not_found,
)
from server.transport.interceptors import access_log
from server.transport.tenancy import current_tenant
from server.transport.watch_stream import Watcher

Context = grpc.aio.ServicerContext[Any, Any]
logger = logging.getLogger(__name__)

# Every call is one statement; PostgreSQL can still abort it on a deadlock (a reader against
# another service's TRUNCATE, which locks the chat table, then the counters) or a serialization
# failure caused by other writers' triggers or isolation levels. Retried, then ABORTED so the
# caller can decide.
ATTEMPTS = 3
T = TypeVar("T")


async def retrying(run: Callable[[], Awaitable[T]]) -> T:
    """`run()`, again after a short jittered pause when PostgreSQL aborted it as a conflict."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await run()
        except Exception as error:
            if not is_retryable_conflict(error):
                raise
            if attempt == ATTEMPTS:
                raise ConflictError() from None
            logger.info("statement conflicted (attempt %d), retrying", attempt)
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 -- jitter
    raise AssertionError("unreachable: the loop returns or raises")


class SessionMonitoringService(pb_grpc.SessionMonitoringServicer):
    """Lists, inspects and updates the calling tenant's chat sessions."""

    def __init__(
        self, database: Database, *, read_database: Database | None = None, watcher: Watcher
    ) -> None:
        self._database = database
        # Reads go to the replica when there is one; writes (and their read-back) never do.
        self._read_database = read_database or database
        self._watcher = watcher

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        tenant_id = current_tenant()
        query = validation.list_sessions_query(request, tenant_id=tenant_id)
        filters = query.filters
        count_plan = counting.plan(
            counting.inclusive_range(filters.created_from, filters.created_to)
        )
        # One row more than the page tells whether another page follows. Counts and rows come
        # from one statement, so from one snapshot: the total always agrees with the page.
        limit = query.page_size + 1
        listed = await retrying(
            lambda: list_page(
                self._read_database,
                tenant_id=tenant_id,
                filters=filters,
                count_plan=count_plan,
                after=query.after,
                offset=query.skip,
                limit=limit,
            )
        )
        total, rows = listed.total, listed.rows
        next_page_token = ""
        if len(rows) > query.page_size:
            rows = rows[: query.page_size]
            last = rows[-1]
            next_page_token = page_tokens.encode(
                page_tokens.Cursor(last.created_key, last.session_id, query.offset + len(rows)),
                query.scope,
            )
        response = pb.ListSessionsResponse(
            pagination=pb.Pagination(
                page=query.page,
                page_size=query.page_size,
                total=total,
                total_pages=-(-total // query.page_size),
            ),
            next_page_token=next_page_token,
            watch_token=watch_stream.list_watch_token(tenant_id, filters, listed.watch),
        )
        sessions = response.sessions
        for row in rows:
            convert.fill_session(sessions.add(), row)
        return response

    async def GetSessionDetail(
        self, request: pb.GetSessionDetailRequest, context: Context
    ) -> pb.GetSessionDetailResponse:
        tenant_id = current_tenant()
        query = validation.session_detail_query(request, tenant_id=tenant_id)
        found = await retrying(
            lambda: session_detail(
                self._read_database,
                tenant_id=tenant_id,
                session_id=query.session_id,
                after=query.after,
                limit=query.page_size + 1,
            )
        )
        if found is None:
            raise session_not_found(query.session_id)
        messages = found.messages
        response = pb.GetSessionDetailResponse()
        convert.fill_session(response.session, found.session)
        detail_reply.fill_metadata(response, found.metadata)
        kept = detail_reply.fill_messages(
            response, messages[: query.page_size], whole=query.full_content
        )
        if kept < len(messages):
            last = messages[kept - 1]
            response.next_page_token = page_tokens.encode(
                page_tokens.Cursor(last.created_key, str(last.id), query.offset + kept),
                query.scope,
            )
        return response

    async def UpdateSessionStatus(
        self, request: pb.UpdateSessionStatusRequest, context: Context
    ) -> pb.UpdateSessionStatusResponse:
        tenant_id = current_tenant()
        update = validation.status_update(request)
        access_log.note(session=update.session_id, status=update.status)
        row = await retrying(lambda: self._update_status(tenant_id, update))
        response = pb.UpdateSessionStatusResponse()
        convert.fill_session(response.session, row)
        return response

    async def WatchSessions(
        self, request: pb.WatchSessionsRequest, context: Context
    ) -> AsyncIterator[pb.WatchSessionsResponse | bytes]:
        """Events as messages, or already serialized (encoded once for many streams)."""
        tenant_id = current_tenant()
        query = validation.watch_query(request, tenant_id=tenant_id)
        async for response in self._watcher.stream(query, tenant_id):
            yield response

    async def _update_status(self, tenant_id: str, update: validation.StatusUpdate) -> SessionRow:
        # One atomic statement: no transaction around it, which would cost two round trips more.
        result = await set_session_status(
            self._database, tenant_id=tenant_id, session_id=update.session_id, status=update.status
        )
        row = result.session
        if row is None:
            raise session_not_found(update.session_id)
        # Unchanged is success when the session already shows that status, whatever its
        # metadata holds (metadata that is not an object shows as active).
        if not result.changed and not result.accepts_status and row.status != update.status:
            raise SessionMetadataNotObjectError()
        return row
