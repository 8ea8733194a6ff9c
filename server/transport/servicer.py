"""The SessionMonitoring servicer: validate the request, run the queries, convert the rows.

The tenant comes from `tenancy.current_tenant()`, bound by the interceptor; errors are raised as
`server.transport.errors` exceptions and translated there too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.data.engine import is_retryable_conflict
from server.data.rows import MessageRow, SessionRow
from server.data.session_detail import session_detail
from server.data.session_list import list_page
from server.data.statements import Database
from server.data.status_update import set_session_status
from server.domain import counting
from server.transport import convert, page_tokens, validation
from server.transport.errors import (
    ConflictError,
    SessionMetadataNotObjectError,
    SessionNotFoundError,
)
from server.transport.jsonvalue import fill_struct
from server.transport.tenancy import current_tenant
from server.transport.trace import add_to_trace

Context = grpc.aio.ServicerContext[Any, Any]
logger = logging.getLogger(__name__)

# A status update is one statement; PostgreSQL can still abort it on a deadlock or a
# serialization failure caused by other writers' triggers or isolation levels. Retried, then
# ABORTED so the caller can decide.
UPDATE_ATTEMPTS = 3
# gRPC clients refuse responses over 4 MiB by default; keep detail pages well under that.
RESPONSE_BYTES_BUDGET = 3 * 1024 * 1024
# Session metadata larger than this is left out of a detail reply (flagged): the messages need
# the room, and a default client receives 4 MiB at most.
METADATA_BYTES_BUDGET = 1024 * 1024
# What a client receives by default (4 MiB), less room for the reply's framing and trailers: a
# single message larger than this is cut to fit unless the caller asks for full content.
RECEIVE_LIMIT_BYTES = 4 * 1024 * 1024 - 16 * 1024
# The truncation flag, the full size and the length prefixes that cutting adds to a message.
_CUT_MARGIN = 32


class SessionMonitoringService(pb_grpc.SessionMonitoringServicer):
    """Lists, inspects and updates the calling tenant's chat sessions."""

    def __init__(self, database: Database, *, read_database: Database | None = None) -> None:
        self._database = database
        # Reads go to the replica when there is one; writes (and their read-back) never do.
        self._read_database = read_database or database

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
        total, rows = await list_page(
            self._read_database,
            tenant_id=tenant_id,
            filters=filters,
            count_plan=count_plan,
            after=query.after,
            offset=query.offset,
            limit=limit,
        )
        next_page_token = ""
        if len(rows) > query.page_size:
            rows = rows[: query.page_size]
            last = rows[-1]
            next_page_token = page_tokens.encode(
                page_tokens.Cursor(last.created_key, last.session_id, query.page + 1),
                kind=page_tokens.KIND_SESSIONS,
                query_fingerprint=query.fingerprint,
            )
        response = pb.ListSessionsResponse(
            pagination=pb.Pagination(
                page=query.page,
                page_size=query.page_size,
                total=total,
                total_pages=-(-total // query.page_size),
            ),
            next_page_token=next_page_token,
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
        found = await session_detail(
            self._read_database,
            tenant_id=tenant_id,
            session_id=query.session_id,
            after=query.after,
            limit=query.page_size + 1,
        )
        if found is None:
            raise SessionNotFoundError()
        messages = found.messages
        response = pb.GetSessionDetailResponse()
        convert.fill_session(response.session, found.session)
        if isinstance(found.metadata, dict):
            fill_struct(response.metadata, found.metadata)
            if response.metadata.ByteSize() > METADATA_BYTES_BUDGET:
                response.ClearField("metadata")
                response.metadata_truncated = True
        kept = _fill_page(response, messages[: query.page_size], whole=query.full_content)
        if kept < len(messages):
            last = messages[kept - 1]
            page = query.after.page + 1 if query.after else 2
            response.next_page_token = page_tokens.encode(
                page_tokens.Cursor(last.created_key, str(last.id), page),
                kind=page_tokens.KIND_MESSAGES,
                query_fingerprint=query.fingerprint,
            )
        return response

    async def UpdateSessionStatus(
        self, request: pb.UpdateSessionStatusRequest, context: Context
    ) -> pb.UpdateSessionStatusResponse:
        tenant_id = current_tenant()
        update = validation.status_update(request)
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            try:
                row = await self._update_status(tenant_id, update)
            except Exception as error:
                if not is_retryable_conflict(error):
                    raise
                if attempt == UPDATE_ATTEMPTS:
                    raise ConflictError() from None
                logger.info("update conflicted (attempt %d), retrying", attempt)
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 -- jitter
            else:
                response = pb.UpdateSessionStatusResponse()
                convert.fill_session(response.session, row)
                return response
        raise AssertionError("unreachable: the loop returns or raises")

    async def _update_status(self, tenant_id: str, update: validation.StatusUpdate) -> SessionRow:
        # One atomic statement: no transaction around it, which would cost two round trips more.
        result = await set_session_status(
            self._database, tenant_id=tenant_id, session_id=update.session_id, status=update.status
        )
        row = result.session
        if row is None:
            raise SessionNotFoundError()
        # Unchanged is success when the session already shows that status, whatever its
        # metadata holds (metadata that is not an object shows as active).
        if not result.changed and not result.accepts_status and row.status != update.status:
            raise SessionMetadataNotObjectError()
        return row


def _fill_page(
    response: pb.GetSessionDetailResponse, rows: list[MessageRow], *, whole: bool
) -> int:
    """Add `rows` and their trace to `response` while it stays within RESPONSE_BYTES_BUDGET;
    return how many were added. A page always holds at least one message, so paging always
    makes progress, and stops early rather than exceed what a default client can receive; a
    first message too large even alone is cut to fit unless `whole` content was asked for."""
    fixed = response.ByteSize()
    for row in rows:
        _add_message(response, row)
    # One size for the whole response is far cheaper than one per message and entry, and a page
    # nearly always fits; only when it does not is it rebuilt, measuring as it goes.
    if response.ByteSize() <= RESPONSE_BYTES_BUDGET:
        return len(rows)
    del response.messages[:]
    response.ClearField("trace")
    return _fill_page_measured(
        response,
        rows,
        RESPONSE_BYTES_BUDGET - fixed,
        None if whole else RECEIVE_LIMIT_BYTES - fixed,
    )


def _fill_page_measured(
    response: pb.GetSessionDetailResponse,
    rows: list[MessageRow],
    budget: int,
    limit: int | None,
) -> int:
    """`_fill_page` for a page that would not fit: add messages while their size and their
    trace entries' size fit in `budget`. The first message is always added, cut to `limit`
    (what a default client receives) when it is larger."""
    trace = response.trace
    parts: tuple[RepeatedCompositeFieldContainer[Any], ...] = (
        trace.retrieval,
        trace.tools,
        trace.errors,
    )
    for kept, row in enumerate(rows):
        before = [len(part) for part in parts]
        message = _add_message(response, row)
        # Each entry's own size plus its field tag and length prefix (at most 1 + 5 bytes).
        size = (
            message.ByteSize()
            + 6
            + sum(
                entry.ByteSize() + 6
                for part, start in zip(parts, before, strict=True)
                for entry in part[start:]
            )
        )
        if size > budget:
            if kept:
                del response.messages[-1]
                for part, start in zip(parts, before, strict=True):
                    del part[start:]
                return kept
            if limit is not None and size > limit:
                _cut_to_fit(response, message, parts, before, limit)
        budget -= size
    return len(rows)


def _cut_to_fit(
    response: pb.GetSessionDetailResponse,
    message: pb.Message,
    parts: tuple[RepeatedCompositeFieldContainer[Any], ...],
    before: list[int],
    budget: int,
) -> None:
    """Make the only message of a page fit `budget`: leave out its trace entries if they alone
    do not fit, then cut its content (at a character boundary) to what room is left."""
    entries = sum(
        entry.ByteSize() + 6
        for part, start in zip(parts, before, strict=True)
        for entry in part[start:]
    )
    if entries > budget // 2:
        for part, start in zip(parts, before, strict=True):
            del part[start:]
        response.trace_truncated = True
        entries = 0
    content = message.content.encode()
    room = budget - entries - (message.ByteSize() - len(content)) - _CUT_MARGIN
    if len(content) > room:
        message.content = content[: max(room, 0)].decode("utf-8", "ignore")
        message.content_truncated = True
        message.content_bytes = len(content)


def _add_message(response: pb.GetSessionDetailResponse, row: MessageRow) -> pb.Message:
    """Append the message of `row` and its trace entries to `response`; return the message."""
    message = response.messages.add()
    convert.fill_message(message, row)
    add_to_trace(response.trace, row.id, row.role, row.metadata)
    return message
