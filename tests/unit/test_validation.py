"""Request validation: every INVALID_ARGUMENT rule, the defaults, and page-token binding."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.domain import status
from server.domain.filters import SessionFilters
from server.domain.time_keys import key_of
from server.transport import page_tokens, validation
from server.transport.errors import REASON_INVALID_ARGUMENT, FieldViolation, InvalidArgumentError
from server.transport.page_tokens import MAX_PAGE, Cursor

TENANT = "tenant-a"
LAST_ROW_TIME = key_of(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
NOT_BASE64 = "garbage!"
PROTO_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


def _violations(error: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    assert error.value.reason == REASON_INVALID_ARGUMENT
    return {v.field: v.description for v in error.value.violations}


def _list_violations(request: pb.ListSessionsRequest, tenant_id: str = TENANT) -> dict[str, str]:
    with pytest.raises(InvalidArgumentError) as error:
        validation.list_sessions_query(request, tenant_id=tenant_id)
    return _violations(error)


def _detail_violations(request: pb.GetSessionDetailRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgumentError) as error:
        validation.session_detail_query(request, tenant_id=TENANT)
    return _violations(error)


def _update_violations(request: pb.UpdateSessionStatusRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgumentError) as error:
        validation.status_update(request)
    return _violations(error)


def _sessions_token(
    request: pb.ListSessionsRequest, *, tenant_id: str = TENANT, offset: int = 20
) -> str:
    """A token as the server would issue it after answering `request` for `tenant_id`, leading
    to the page after the first `offset` rows."""
    query = validation.list_sessions_query(request, tenant_id=tenant_id)
    return page_tokens.encode(Cursor(LAST_ROW_TIME, "s-9", offset), query.scope)


def _messages_token(
    request: pb.GetSessionDetailRequest, *, key: str = "41", offset: int = 100
) -> str:
    query = validation.session_detail_query(request, tenant_id=TENANT)
    return page_tokens.encode(Cursor(LAST_ROW_TIME, key, offset), query.scope)


def _status(number: int) -> pb.SessionStatus:
    """Any enum number, known or not: proto3 enums are open, so callers can send any int32."""
    return cast(pb.SessionStatus, number)


def _with_time(field: str, value: timestamp_pb2.Timestamp) -> pb.ListSessionsRequest:
    request = pb.ListSessionsRequest()
    getattr(request, field).CopyFrom(value)
    return request


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


# --- ListSessions: defaults and page geometry -------------------------------------------------


def test_an_empty_list_request_asks_for_the_first_page_of_twenty_unfiltered() -> None:
    query = validation.list_sessions_query(pb.ListSessionsRequest(), tenant_id=TENANT)
    assert query.page == 1
    assert query.page_size == validation.DEFAULT_PAGE_SIZE == 20
    assert query.offset == query.skip == 0
    assert query.after is None
    assert query.filters == SessionFilters(None, None, None, None)


def test_page_number_and_size_give_the_row_offset() -> None:
    query = validation.list_sessions_query(
        pb.ListSessionsRequest(page=3, page_size=10), tenant_id=TENANT
    )
    assert (query.page, query.page_size, query.offset) == (3, 10, 20)
    assert query.skip == 20


def test_the_last_page_number_gives_a_row_offset_of_its_own_page() -> None:
    query = validation.list_sessions_query(
        pb.ListSessionsRequest(page=MAX_PAGE, page_size=100), tenant_id=TENANT
    )
    assert (query.page, query.offset) == (MAX_PAGE, (MAX_PAGE - 1) * 100)


@pytest.mark.parametrize("page_size", [1, validation.MAX_PAGE_SIZE])
def test_page_sizes_at_the_bounds_are_accepted(page_size: int) -> None:
    query = validation.list_sessions_query(
        pb.ListSessionsRequest(page_size=page_size), tenant_id=TENANT
    )
    assert query.page_size == page_size


@pytest.mark.parametrize("page_size", [-1, validation.MAX_PAGE_SIZE + 1, 2**31 - 1])
def test_page_sizes_outside_one_to_one_hundred_are_refused(page_size: int) -> None:
    assert set(_list_violations(pb.ListSessionsRequest(page_size=page_size))) == {"page_size"}


@pytest.mark.parametrize("page", [-1, -(2**31)])
def test_a_negative_page_is_refused(page: int) -> None:
    assert set(_list_violations(pb.ListSessionsRequest(page=page))) == {"page"}


def test_every_bad_field_is_reported_at_once() -> None:
    request = pb.ListSessionsRequest(page=-1, page_size=101, status=_status(9))
    assert set(_list_violations(request)) == {"page", "page_size", "status"}


# --- ListSessions: filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "stored"),
    [
        (pb.SESSION_STATUS_ACTIVE, status.ACTIVE),
        (pb.SESSION_STATUS_CLOSED, status.CLOSED),
        (pb.SESSION_STATUS_EXPIRED, status.EXPIRED),
        (pb.SESSION_STATUS_UNSPECIFIED, None),
    ],
)
def test_a_status_filter_maps_to_the_stored_status_word(
    requested: pb.SessionStatus, stored: str | None
) -> None:
    query = validation.list_sessions_query(
        pb.ListSessionsRequest(status=requested), tenant_id=TENANT
    )
    assert query.filters.status == stored


@pytest.mark.parametrize("number", [4, 99, -1])
def test_an_unknown_status_number_in_the_filter_is_refused(number: int) -> None:
    request = pb.ListSessionsRequest(status=_status(number))
    assert set(_list_violations(request)) == {"status"}


def test_channel_type_is_kept_as_given_when_set_even_if_empty() -> None:
    query = validation.list_sessions_query(
        pb.ListSessionsRequest(channel_type=""), tenant_id=TENANT
    )
    assert query.filters.channel_type == ""
    unset = validation.list_sessions_query(pb.ListSessionsRequest(), tenant_id=TENANT)
    assert unset.filters.channel_type is None


@pytest.mark.parametrize("channel_type", ["web\x00", "a\nb", "\x1b[31m", "x\x7f"])
def test_a_channel_type_with_control_characters_is_refused(channel_type: str) -> None:
    request = pb.ListSessionsRequest(channel_type=channel_type)
    assert set(_list_violations(request)) == {"channel_type"}


def test_a_channel_type_longer_than_the_column_is_refused() -> None:
    limit = validation.CHANNEL_TYPE_MAX_LENGTH
    accepted = validation.list_sessions_query(
        pb.ListSessionsRequest(channel_type="c" * limit), tenant_id=TENANT
    )
    assert accepted.filters.channel_type == "c" * limit
    request = pb.ListSessionsRequest(channel_type="c" * (limit + 1))
    assert set(_list_violations(request)) == {"channel_type"}


def test_time_bounds_become_utc_datetimes() -> None:
    request = pb.ListSessionsRequest(start_time=_ts(1_700_000_000), end_time=_ts(1_700_000_060))
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert query.filters.created_from == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert query.filters.created_to == datetime(2023, 11, 14, 22, 14, 20, tzinfo=UTC)


def test_start_after_end_is_refused() -> None:
    request = pb.ListSessionsRequest(start_time=_ts(1_700_000_001), end_time=_ts(1_700_000_000))
    assert set(_list_violations(request)) == {"start_time"}


def test_start_one_nanosecond_after_end_within_the_same_microsecond_is_refused() -> None:
    request = pb.ListSessionsRequest(
        start_time=_ts(1_700_000_000, 2), end_time=_ts(1_700_000_000, 1)
    )
    assert set(_list_violations(request)) == {"start_time"}


def test_equal_start_and_end_are_accepted() -> None:
    request = pb.ListSessionsRequest(start_time=_ts(1_700_000_000), end_time=_ts(1_700_000_000))
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert query.filters.created_from == query.filters.created_to


def test_equal_start_and_end_with_sub_microsecond_nanos_are_not_called_start_after_end() -> None:
    # Rounding inward empties the range [t, t] when t is between two microseconds, but the
    # request itself is consistent: start is not after end, so it must not be INVALID_ARGUMENT.
    moment = _ts(1_700_000_000, 1_500)
    request = pb.ListSessionsRequest(start_time=moment, end_time=moment)
    validation.list_sessions_query(request, tenant_id=TENANT)


def test_inclusive_bounds_round_sub_microsecond_nanos_inward() -> None:
    request = pb.ListSessionsRequest(
        start_time=_ts(1_700_000_000, 1), end_time=_ts(1_700_000_010, 1_999)
    )
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert query.filters.created_from == datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)
    assert query.filters.created_to == datetime(2023, 11, 14, 22, 13, 30, 1, tzinfo=UTC)


def test_whole_microsecond_bounds_are_not_rounded() -> None:
    request = pb.ListSessionsRequest(
        start_time=_ts(1_700_000_000, 7_000), end_time=_ts(1_700_000_000, 7_000)
    )
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    expected = datetime(2023, 11, 14, 22, 13, 20, 7, tzinfo=UTC)
    assert query.filters.created_from == expected
    assert query.filters.created_to == expected


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize("seconds", [-62_135_596_801, 253_402_300_800, -(2**63), 2**63 - 1])
def test_timestamps_outside_years_1_to_9999_are_refused(field: str, seconds: int) -> None:
    request = _with_time(field, _ts(seconds))
    assert set(_list_violations(request)) == {field}


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, -(2**31), 2**31 - 1])
def test_timestamp_nanos_outside_zero_to_999999999_are_refused(field: str, nanos: int) -> None:
    request = _with_time(field, _ts(1_700_000_000, nanos))
    assert set(_list_violations(request)) == {field}


def test_the_first_and_last_representable_timestamps_are_accepted() -> None:
    request = pb.ListSessionsRequest(
        start_time=_ts(-62_135_596_800), end_time=_ts(253_402_300_799, 999_999_999)
    )
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert query.filters.created_from == datetime(1, 1, 1, tzinfo=UTC)
    assert query.filters.created_to == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def test_a_start_time_that_rounds_past_the_last_representable_microsecond_is_refused() -> None:
    request = pb.ListSessionsRequest(start_time=_ts(253_402_300_799, 999_999_999))
    assert set(_list_violations(request)) == {"start_time"}


# --- ListSessions: page tokens -----------------------------------------------------------------


def test_a_token_resumes_after_its_cursor_on_the_page_its_offset_falls_on() -> None:
    request = pb.ListSessionsRequest(status=pb.SESSION_STATUS_CLOSED, page_size=5)
    token = _sessions_token(request, offset=15)
    request.page_token = token
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert query.after == Cursor(LAST_ROW_TIME, "s-9", 15)
    assert query.page == 4
    assert query.offset == 15
    # The keyset position says where to resume; nothing is skipped.
    assert query.skip == 0


@pytest.mark.parametrize(
    ("page_size", "page"),
    [(5, 4), (1, 16), (3, 6), (4, 4), (15, 2), (16, 1), (100, 1)],
)
def test_a_token_is_accepted_at_another_page_size_on_the_page_holding_its_next_row(
    page_size: int, page: int
) -> None:
    # Issued after three pages of 5 (AIP-158: the page size may change, the filters may not).
    token = _sessions_token(pb.ListSessionsRequest(page_size=5), offset=15)
    request = pb.ListSessionsRequest(page_size=page_size, page_token=token)
    query = validation.list_sessions_query(request, tenant_id=TENANT)
    assert (query.page_size, query.offset, query.page, query.skip) == (page_size, 15, page, 0)


def test_a_token_together_with_a_page_number_is_refused() -> None:
    request = pb.ListSessionsRequest()
    request.page_token = _sessions_token(request)
    request.page = 2
    assert set(_list_violations(request)) == {"page"}


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(pb.ListSessionsRequest(status=pb.SESSION_STATUS_ACTIVE), id="status"),
        pytest.param(pb.ListSessionsRequest(channel_type="web"), id="channel_type"),
        pytest.param(pb.ListSessionsRequest(start_time=_ts(1)), id="start_time"),
        pytest.param(pb.ListSessionsRequest(end_time=_ts(1)), id="end_time"),
    ],
)
def test_a_token_reused_with_other_filters_is_refused_naming_the_filters(
    changed: pb.ListSessionsRequest,
) -> None:
    changed.page_token = _sessions_token(pb.ListSessionsRequest())
    assert _list_violations(changed) == {"page_token": page_tokens.OTHER_FILTERS}


@pytest.mark.parametrize(
    "issued",
    [
        pytest.param(pb.ListSessionsRequest(status=pb.SESSION_STATUS_ACTIVE), id="status"),
        pytest.param(pb.ListSessionsRequest(channel_type="web"), id="channel_type"),
        pytest.param(pb.ListSessionsRequest(start_time=_ts(1)), id="start_time"),
        pytest.param(pb.ListSessionsRequest(end_time=_ts(1)), id="end_time"),
    ],
)
def test_a_token_issued_with_a_filter_is_refused_without_it(issued: pb.ListSessionsRequest) -> None:
    request = pb.ListSessionsRequest(page_token=_sessions_token(issued))
    assert _list_violations(request) == {"page_token": page_tokens.OTHER_FILTERS}


def test_start_times_that_validate_to_the_same_microsecond_are_the_same_filter() -> None:
    # The scope is the filters as validated: both round up to 1 s + 1 µs.
    token = _sessions_token(_with_time("start_time", _ts(1, 1)))
    request = _with_time("start_time", _ts(1, 999))
    request.page_token = token
    assert validation.list_sessions_query(request, tenant_id=TENANT).after is not None


def test_an_explicit_default_page_size_matches_a_token_issued_for_page_size_zero() -> None:
    token = _sessions_token(pb.ListSessionsRequest())
    request = pb.ListSessionsRequest(page_size=validation.DEFAULT_PAGE_SIZE, page_token=token)
    assert validation.list_sessions_query(request, tenant_id=TENANT).after is not None


def test_a_token_issued_to_another_tenant_is_refused_naming_the_tenant() -> None:
    token = _sessions_token(pb.ListSessionsRequest(), tenant_id="tenant-b")
    assert _list_violations(pb.ListSessionsRequest(page_token=token)) == {
        "page_token": page_tokens.OTHER_TENANT
    }


def test_a_messages_token_is_refused_by_list_sessions_as_another_methods() -> None:
    token = _messages_token(pb.GetSessionDetailRequest(session_id="s-1"))
    assert _list_violations(pb.ListSessionsRequest(page_token=token)) == {
        "page_token": page_tokens.OTHER_METHOD
    }


def test_a_garbage_token_is_not_a_page_token() -> None:
    assert _list_violations(pb.ListSessionsRequest(page_token=NOT_BASE64)) == {
        "page_token": page_tokens.NOT_A_PAGE_TOKEN
    }


def test_a_token_whose_page_number_would_pass_int32_at_this_page_size_is_refused() -> None:
    # Fine at 100 per page (page 21474837); past page 2**31 - 1 at 1 per page.
    token = _sessions_token(pb.ListSessionsRequest(), offset=MAX_PAGE * 10)
    request = pb.ListSessionsRequest(page_size=100, page_token=token)
    assert validation.list_sessions_query(request, tenant_id=TENANT).page == MAX_PAGE // 10 + 1
    request.page_size = 1
    assert _list_violations(request) == {"page_token": page_tokens.PAST_LAST_PAGE}


def test_a_token_with_a_bad_page_size_reports_both() -> None:
    token = _sessions_token(pb.ListSessionsRequest())
    request = pb.ListSessionsRequest(page_size=-1, page_token=token)
    assert set(_list_violations(request)) == {"page_size"}
    request.page_token = NOT_BASE64
    assert set(_list_violations(request)) == {"page_size", "page_token"}


# --- GetSessionDetail ----------------------------------------------------------------------------


def test_a_detail_request_defaults_to_one_hundred_messages() -> None:
    query = validation.session_detail_query(
        pb.GetSessionDetailRequest(session_id="s-1"), tenant_id=TENANT
    )
    assert query.session_id == "s-1"
    assert query.page_size == validation.DEFAULT_MESSAGE_PAGE_SIZE == 100
    assert query.after is None


@pytest.mark.parametrize("page_size", [1, validation.MAX_MESSAGE_PAGE_SIZE])
def test_message_page_sizes_at_the_bounds_are_accepted(page_size: int) -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1", page_size=page_size)
    assert validation.session_detail_query(request, tenant_id=TENANT).page_size == page_size


@pytest.mark.parametrize("page_size", [-1, validation.MAX_MESSAGE_PAGE_SIZE + 1])
def test_message_page_sizes_outside_one_to_one_thousand_are_refused(page_size: int) -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1", page_size=page_size)
    assert set(_detail_violations(request)) == {"page_size"}


def test_a_detail_request_without_session_id_is_refused() -> None:
    assert set(_detail_violations(pb.GetSessionDetailRequest())) == {"session_id"}


def test_a_session_id_at_the_column_length_is_accepted_and_one_longer_is_refused() -> None:
    limit = validation.SESSION_ID_MAX_LENGTH
    # Multi-byte characters: the limit counts characters, as the varchar(255) column does.
    request = pb.GetSessionDetailRequest(session_id="é" * limit)
    assert validation.session_detail_query(request, tenant_id=TENANT).session_id == "é" * limit
    too_long = pb.GetSessionDetailRequest(session_id="é" * (limit + 1))
    assert set(_detail_violations(too_long)) == {"session_id"}


@pytest.mark.parametrize("session_id", ["s\x00", "\ts", "s\r\n", "s\x85"])
def test_a_session_id_with_control_characters_is_refused(session_id: str) -> None:
    assert set(_detail_violations(pb.GetSessionDetailRequest(session_id=session_id))) == {
        "session_id"
    }


def test_a_messages_token_resumes_after_its_cursor() -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1", page_size=10)
    request.page_token = _messages_token(request, key="41", offset=30)
    query = validation.session_detail_query(request, tenant_id=TENANT)
    assert query.after == Cursor(LAST_ROW_TIME, "41", 30)
    assert query.offset == 30


def test_a_first_detail_page_starts_at_offset_zero() -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1")
    assert validation.session_detail_query(request, tenant_id=TENANT).offset == 0


def test_a_messages_token_for_another_session_is_refused_naming_the_session() -> None:
    token = _messages_token(pb.GetSessionDetailRequest(session_id="s-1"))
    request = pb.GetSessionDetailRequest(session_id="s-2", page_token=token)
    assert _detail_violations(request) == {"page_token": page_tokens.OTHER_SESSION}


def test_a_messages_token_of_another_tenant_is_refused_naming_the_tenant() -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1")
    query = validation.session_detail_query(request, tenant_id="tenant-b")
    request.page_token = page_tokens.encode(Cursor(LAST_ROW_TIME, "41", 2), query.scope)
    assert _detail_violations(request) == {"page_token": page_tokens.OTHER_TENANT}


@pytest.mark.parametrize("page_size", [1, 50, validation.MAX_MESSAGE_PAGE_SIZE])
def test_a_messages_token_is_accepted_at_another_page_size(page_size: int) -> None:
    token = _messages_token(pb.GetSessionDetailRequest(session_id="s-1"), offset=100)
    request = pb.GetSessionDetailRequest(session_id="s-1", page_size=page_size, page_token=token)
    query = validation.session_detail_query(request, tenant_id=TENANT)
    assert (query.page_size, query.offset) == (page_size, 100)


def test_a_sessions_token_is_refused_by_get_session_detail_as_another_methods() -> None:
    token = _sessions_token(pb.ListSessionsRequest())
    request = pb.GetSessionDetailRequest(session_id="s-1", page_token=token)
    assert _detail_violations(request) == {"page_token": page_tokens.OTHER_METHOD}


def test_a_messages_token_whose_offset_would_pass_int32_pages_is_refused() -> None:
    request = pb.GetSessionDetailRequest(session_id="s-1", page_size=1)
    request.page_token = _messages_token(request, offset=2**63 - 1)
    assert _detail_violations(request) == {"page_token": page_tokens.PAST_LAST_PAGE}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("s-1", id="text"),
        pytest.param("-5", id="negative"),
        pytest.param("²", id="superscript-digit"),
        pytest.param("9" * 30, id="beyond-bigint"),
    ],
)
def test_a_messages_token_whose_key_is_not_a_message_id_is_refused(key: str) -> None:
    # The detail query turns the key into a bigint id; anything else would fail there as INTERNAL.
    request = pb.GetSessionDetailRequest(session_id="s-1")
    request.page_token = _messages_token(request, key=key)
    assert set(_detail_violations(request)) == {"page_token"}


# --- UpdateSessionStatus -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "stored"),
    [
        (pb.SESSION_STATUS_ACTIVE, status.ACTIVE),
        (pb.SESSION_STATUS_CLOSED, status.CLOSED),
        (pb.SESSION_STATUS_EXPIRED, status.EXPIRED),
    ],
)
def test_a_status_update_maps_to_the_stored_status_word(
    requested: pb.SessionStatus, stored: str
) -> None:
    update = validation.status_update(
        pb.UpdateSessionStatusRequest(session_id="s-1", status=requested)
    )
    assert update == validation.StatusUpdate("s-1", stored)


@pytest.mark.parametrize("number", [pb.SESSION_STATUS_UNSPECIFIED, 4, -3])
def test_an_update_to_unspecified_or_unknown_status_is_refused(number: int) -> None:
    request = pb.UpdateSessionStatusRequest(session_id="s-1", status=_status(number))
    assert set(_update_violations(request)) == {"status"}


def test_an_update_without_session_id_or_status_reports_both() -> None:
    assert set(_update_violations(pb.UpdateSessionStatusRequest())) == {"session_id", "status"}


@pytest.mark.parametrize("session_id", ["s" * 256, "a\x00b", "\x1f"])
def test_an_update_with_a_malformed_session_id_is_refused(session_id: str) -> None:
    request = pb.UpdateSessionStatusRequest(session_id=session_id, status=pb.SESSION_STATUS_CLOSED)
    assert set(_update_violations(request)) == {"session_id"}


# --- Properties ----------------------------------------------------------------------------------

timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-62_135_596_800, max_value=253_402_300_799),
    nanos=INT32 | st.integers(min_value=0, max_value=999_999_999),
)


@given(
    status_number=INT32,
    start=st.none() | timestamps,
    end=st.none() | timestamps,
    page=INT32 | st.integers(min_value=0, max_value=5),
    page_size=INT32 | st.integers(min_value=0, max_value=100),
    page_token=PROTO_TEXT,
    channel_type=st.none() | PROTO_TEXT,
)
def test_list_validation_raises_nothing_but_invalid_argument(
    status_number: int,
    start: timestamp_pb2.Timestamp | None,
    end: timestamp_pb2.Timestamp | None,
    page: int,
    page_size: int,
    page_token: str,
    channel_type: str | None,
) -> None:
    request = pb.ListSessionsRequest(
        status=_status(status_number),
        start_time=start,
        end_time=end,
        page=page,
        page_size=page_size,
        page_token=page_token,
        channel_type=channel_type,
    )
    violations: Sequence[FieldViolation] = ()
    try:
        query = validation.list_sessions_query(request, tenant_id=TENANT)
    except InvalidArgumentError as error:
        violations = error.violations
    if violations:
        return
    assert 1 <= query.page_size <= validation.MAX_PAGE_SIZE
    assert 1 <= query.page <= MAX_PAGE
    assert 0 <= query.skip <= query.offset
    if query.filters.created_from and query.filters.created_to:
        assert query.filters.created_from <= query.filters.created_to


@given(session_id=PROTO_TEXT, page_size=INT32, page_token=PROTO_TEXT)
def test_detail_validation_raises_nothing_but_invalid_argument(
    session_id: str, page_size: int, page_token: str
) -> None:
    request = pb.GetSessionDetailRequest(
        session_id=session_id, page_size=page_size, page_token=page_token
    )
    violations: Sequence[FieldViolation] = ()
    try:
        query = validation.session_detail_query(request, tenant_id=TENANT)
    except InvalidArgumentError as error:
        violations = error.violations
    if violations:
        return
    assert 1 <= query.page_size <= validation.MAX_MESSAGE_PAGE_SIZE
    assert 0 < len(query.session_id) <= validation.SESSION_ID_MAX_LENGTH


@given(session_id=PROTO_TEXT, status_number=INT32)
def test_update_validation_raises_nothing_but_invalid_argument(
    session_id: str, status_number: int
) -> None:
    request = pb.UpdateSessionStatusRequest(session_id=session_id, status=_status(status_number))
    violations: Sequence[FieldViolation] = ()
    try:
        update = validation.status_update(request)
    except InvalidArgumentError as error:
        violations = error.violations
    if violations:
        return
    assert update.status in status.STORED_STATUSES
