"""Request validation: turn raw protobuf requests into checked queries, or field violations.

Pure: no I/O. Every rule that yields INVALID_ARGUMENT lives here so it can be tested directly.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.domain.filters import SessionFilters
from server.domain.watch import WatchFilters
from server.transport import page_tokens, watch_tokens
from server.transport.convert import STATUS_TO_STORED
from server.transport.errors import FieldViolation, invalid_argument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_MESSAGE_PAGE_SIZE = 100
MAX_MESSAGE_PAGE_SIZE = 1000
SESSION_ID_MAX_LENGTH = 255
CHANNEL_TYPE_MAX_LENGTH = 255

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ListSessionsQuery:
    """A validated ListSessions call: filters, page geometry and where to resume."""

    filters: SessionFilters
    page_size: int
    # Rows the walk returned before this page: (page - 1) * page_size, or the token's offset.
    offset: int
    after: page_tokens.Cursor | None
    scope: page_tokens.Scope

    @property
    def page(self) -> int:
        """The number, at this page size, of the page holding the reply's first row."""
        return page_tokens.page_of(self.offset, self.page_size)

    @property
    def skip(self) -> int:
        """Rows the query skips: the offset when paging by number, 0 when a token's keyset
        position says where to resume."""
        return 0 if self.after is not None else self.offset


@dataclass(frozen=True, slots=True)
class SessionDetailQuery:
    """A validated GetSessionDetail call: the session and the page of its messages."""

    session_id: str
    page_size: int
    after: page_tokens.Cursor | None
    scope: page_tokens.Scope
    offset: int = 0  # messages the walk returned before this page
    full_content: bool = False


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A validated UpdateSessionStatus call."""

    session_id: str
    status: str


def list_sessions_query(request: pb.ListSessionsRequest, *, tenant_id: str) -> ListSessionsQuery:
    """Validate a ListSessionsRequest for `tenant_id`."""
    violations: list[FieldViolation] = []
    stored = _filter_status(request.status, violations)
    created_from = _timestamp(request, "start_time", violations, round_up=True)
    created_to = _timestamp(request, "end_time", violations, round_up=False)
    # Compare before rounding: equal bounds with sub-microsecond nanos are a valid, empty range.
    if created_from and created_to and _raw(request.start_time) > _raw(request.end_time):
        violations.append(FieldViolation("start_time", "must not be after end_time"))
    channel_type = None
    if request.HasField("channel_type"):
        channel_type = request.channel_type
        _check_text("channel_type", channel_type, CHANNEL_TYPE_MAX_LENGTH, violations)
    if request.page < 0:
        violations.append(
            FieldViolation("page", "must be 0 (first page) or a positive page number")
        )
    page_size = _page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, violations)
    filters = SessionFilters(stored, created_from, created_to, channel_type)
    # The page size may change between calls of one walk (AIP-158); the tenant and filters not.
    scope = page_tokens.sessions_scope(tenant_id, filters)
    after = None
    if request.page_token:
        if request.page > 0:
            violations.append(FieldViolation("page", "must be 0 when page_token is set"))
        after = _cursor(request.page_token, scope, page_size, violations)
    if violations:
        raise invalid_argument(*violations)
    offset = after.offset if after else (max(request.page, 1) - 1) * page_size
    return ListSessionsQuery(filters, page_size, offset, after, scope)


def session_detail_query(
    request: pb.GetSessionDetailRequest, *, tenant_id: str
) -> SessionDetailQuery:
    """Validate a GetSessionDetailRequest for `tenant_id`."""
    violations: list[FieldViolation] = []
    _check_session_id(request.session_id, violations)
    page_size = _page_size(
        request.page_size, DEFAULT_MESSAGE_PAGE_SIZE, MAX_MESSAGE_PAGE_SIZE, violations
    )
    scope = page_tokens.messages_scope(tenant_id, request.session_id)
    after = None
    if request.page_token:
        after = _cursor(request.page_token, scope, page_size, violations)
        if after is not None and not _is_message_id(after.key):
            violations.append(FieldViolation("page_token", page_tokens.NOT_A_PAGE_TOKEN))
    if violations:
        raise invalid_argument(*violations)
    offset = after.offset if after else 0
    return SessionDetailQuery(
        request.session_id, page_size, after, scope, offset, request.full_content
    )


def status_update(request: pb.UpdateSessionStatusRequest) -> StatusUpdate:
    """Validate an UpdateSessionStatusRequest."""
    violations: list[FieldViolation] = []
    _check_session_id(request.session_id, violations)
    stored = STATUS_TO_STORED.get(request.status)
    if stored is None:
        violations.append(
            FieldViolation(
                "status",
                "must be SESSION_STATUS_ACTIVE, SESSION_STATUS_CLOSED or SESSION_STATUS_EXPIRED",
            )
        )
    if violations:
        raise invalid_argument(*violations)
    assert stored is not None  # narrowed by the violation check above
    return StatusUpdate(request.session_id, stored)


@dataclass(frozen=True, slots=True)
class WatchQuery:
    """A validated WatchSessions call: the filters, where to start, and the tokens' scope."""

    filters: WatchFilters
    start: watch_tokens.WatchPoint | None  # None: now (or after the initial set)
    send_initial: bool
    scope: watch_tokens.WatchScope


def watch_query(request: pb.WatchSessionsRequest, *, tenant_id: str) -> WatchQuery:
    """Validate a WatchSessionsRequest for `tenant_id`."""
    violations: list[FieldViolation] = []
    stored = _filter_status(request.status, violations)
    channel_type = None
    if request.HasField("channel_type"):
        channel_type = request.channel_type
        _check_text("channel_type", channel_type, CHANNEL_TYPE_MAX_LENGTH, violations)
    session_id = request.session_id or None
    if session_id is not None:
        _check_session_id(session_id, violations)
    filters = WatchFilters(stored, channel_type, session_id)
    scope = watch_tokens.watch_scope(tenant_id, filters)
    start = None
    if request.resume_token:
        if request.send_initial:
            violations.append(
                FieldViolation("send_initial", "must be false when resume_token is set")
            )
        try:
            start = watch_tokens.decode(request.resume_token, scope)
        except watch_tokens.WatchTokenError as error:
            violations.append(FieldViolation("resume_token", str(error)))
    if violations:
        raise invalid_argument(*violations)
    return WatchQuery(filters, start, request.send_initial, scope)


def _filter_status(value: int, violations: list[FieldViolation]) -> str | None:
    if value == pb.SESSION_STATUS_UNSPECIFIED:
        return None
    stored = STATUS_TO_STORED.get(value)
    if stored is None:
        violations.append(FieldViolation("status", f"unknown SessionStatus value {value}"))
    return stored


def _timestamp(
    request: pb.ListSessionsRequest,
    field: str,
    violations: list[FieldViolation],
    *,
    round_up: bool,
) -> datetime | None:
    """The timestamp field as a datetime, rounded inward to PostgreSQL's microseconds."""
    if not request.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(request, field)
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS:
        violations.append(FieldViolation(field, "must be between 0001-01-01 and 9999-12-31"))
        return None
    if not 0 <= value.nanos <= 999_999_999:
        violations.append(FieldViolation(field, "nanos must be between 0 and 999999999"))
        return None
    micros, remainder = divmod(value.nanos, 1000)
    if round_up and remainder:
        micros += 1  # an inclusive lower bound must not admit the microsecond before it
    try:
        return _EPOCH + timedelta(seconds=value.seconds, microseconds=micros)
    except OverflowError:  # 9999-12-31T23:59:59.9999995Z rounds past datetime.max
        violations.append(FieldViolation(field, "must be between 0001-01-01 and 9999-12-31"))
        return None


def _raw(value: timestamp_pb2.Timestamp) -> tuple[int, int]:
    return value.seconds, value.nanos


def _page_size(value: int, default: int, maximum: int, violations: list[FieldViolation]) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        violations.append(
            FieldViolation("page_size", f"must be between 1 and {maximum} (0 = {default})")
        )
    return value


def _cursor(
    token: str, scope: page_tokens.Scope, page_size: int, violations: list[FieldViolation]
) -> page_tokens.Cursor | None:
    try:
        return page_tokens.decode(token, scope, page_size=page_size)
    except page_tokens.PageTokenError as error:
        violations.append(FieldViolation("page_token", str(error)))
        return None


def _is_message_id(key: str) -> bool:
    """Message ids are PostgreSQL bigints written in ASCII digits."""
    return key.isascii() and key.isdigit() and int(key) <= _MAX_BIGINT


def _check_session_id(value: str, violations: list[FieldViolation]) -> None:
    if not value:
        violations.append(FieldViolation("session_id", "is required"))
        return
    _check_text("session_id", value, SESSION_ID_MAX_LENGTH, violations)


def _check_text(field: str, value: str, max_length: int, violations: list[FieldViolation]) -> None:
    if len(value) > max_length:
        violations.append(FieldViolation(field, f"must be at most {max_length} characters"))
    elif any(unicodedata.category(char) == "Cc" for char in value):
        # PostgreSQL text cannot hold NUL, and no writer stores ids with control characters.
        violations.append(FieldViolation(field, "must not contain control characters"))
