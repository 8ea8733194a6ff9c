"""Page tokens: round trip, the precise refusal of each mismatch, and of corrupt, truncated,
forged or older tokens."""

from __future__ import annotations

import base64
import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.filters import SessionFilters
from server.domain.time_keys import (
    FIRST_STORABLE_KEY,
    INFINITY_KEY,
    LAST_STORABLE_KEY,
    MINUS_INFINITY_KEY,
    key_of,
)
from server.transport import page_tokens
from server.transport.page_tokens import (
    KIND_MESSAGES,
    KIND_SESSIONS,
    MAX_PAGE,
    Cursor,
    PageTokenError,
    Scope,
)

NO_FILTERS = SessionFilters(None, None, None, None)
CLOSED = SessionFilters("closed", None, None, None)
NEW_YEAR = datetime(2024, 1, 1, tzinfo=UTC)
SCOPE = page_tokens.sessions_scope("tenant-a", NO_FILTERS)
CURSOR = Cursor(
    created_key=key_of(datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)), key="s-1", offset=20
)
# Mirrors the private header layouts so tests can forge tokens field by field: version 3, and the
# layout versions 1 and 2 shared.
HEADER = struct.Struct(">BB4s4sqq")
OLD_HEADER = struct.Struct(">BB8sqI")
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _token_from_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw_token(
    *,
    version: int = 3,
    scope: Scope = SCOPE,
    kind: int | None = None,
    micros: int = 0,
    offset: int = 20,
    key: bytes = b"s-1",
) -> str:
    kind = scope.kind if kind is None else kind
    header = HEADER.pack(version, kind, scope.tenant, scope.query, micros, offset)
    return _token_from_raw(header + key)


def _old_token(*, version: int, kind: int = KIND_SESSIONS, key: bytes = b"s-1") -> str:
    """A token as versions 1 and 2 issued it: an 8-byte fingerprint and the next page's number."""
    return _token_from_raw(OLD_HEADER.pack(version, kind, b"\x07" * 8, 0, 2) + key)


def _refusal(token: str, scope: Scope = SCOPE, *, page_size: int = 20) -> str:
    with pytest.raises(PageTokenError) as raised:
        page_tokens.decode(token, scope, page_size=page_size)
    return str(raised.value)


# Any key PostgreSQL text can hold, i.e. anything but NUL.
keys = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=255)
# Every key a timestamptz can have, the infinities included.
sort_keys = st.one_of(
    st.integers(min_value=FIRST_STORABLE_KEY, max_value=LAST_STORABLE_KEY),
    st.sampled_from([INFINITY_KEY, MINUS_INFINITY_KEY]),
)


@given(
    created_key=sort_keys,
    key=keys,
    offset=st.integers(min_value=1, max_value=MAX_PAGE - 1),
    kind=st.sampled_from([KIND_SESSIONS, KIND_MESSAGES]),
    tenant=st.binary(min_size=4, max_size=4),
    query=st.binary(min_size=4, max_size=4),
)
def test_any_cursor_survives_an_encode_decode_round_trip(
    created_key: int, key: str, offset: int, kind: int, tenant: bytes, query: bytes
) -> None:
    original = Cursor(created_key=created_key, key=key, offset=offset)
    scope = Scope(kind, tenant, query)
    token = page_tokens.encode(original, scope)
    # Any page size: a token leads to the row after its cursor, whatever the size of its pages.
    assert page_tokens.decode(token, scope, page_size=1) == original
    assert page_tokens.decode(token, scope, page_size=100) == original
    assert set(token) <= URL_SAFE


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_decoding_arbitrary_text_raises_only_page_token_error(token: str) -> None:
    # Any other exception would surface to callers as INTERNAL instead of INVALID_ARGUMENT.
    with contextlib.suppress(PageTokenError):
        page_tokens.decode(token, SCOPE, page_size=20)


@given(st.binary(max_size=HEADER.size + 40))
def test_decoding_arbitrary_bytes_raises_only_page_token_error(raw: bytes) -> None:
    with contextlib.suppress(PageTokenError):
        page_tokens.decode(_token_from_raw(raw), SCOPE, page_size=1)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("x", id="one-character-is-never-valid-base64"),
        pytest.param("abcde", id="length-one-more-than-a-multiple-of-four"),
        pytest.param("é" * 40, id="non-ascii"),
        pytest.param("AAAA", id="shorter-than-the-header"),
        pytest.param("not a page token at all, just prose", id="prose"),
    ],
)
def test_corrupt_tokens_are_not_page_tokens(token: str) -> None:
    assert _refusal(token) == page_tokens.NOT_A_PAGE_TOKEN


def test_a_token_truncated_into_its_header_is_not_a_page_token() -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    assert _refusal(token[:20]) == page_tokens.NOT_A_PAGE_TOKEN


def test_a_token_truncated_inside_a_multibyte_key_character_is_not_a_page_token() -> None:
    full = HEADER.pack(3, KIND_SESSIONS, SCOPE.tenant, SCOPE.query, 0, 20) + "é".encode()
    assert _refusal(_token_from_raw(full[:-1])) == page_tokens.NOT_A_PAGE_TOKEN


def test_a_token_with_a_key_longer_than_the_limit_is_not_a_page_token() -> None:
    assert _refusal(_raw_token(key=b"k" * 1025)) == page_tokens.NOT_A_PAGE_TOKEN


def test_a_token_with_a_key_at_the_limit_is_accepted() -> None:
    decoded = page_tokens.decode(_raw_token(key=b"k" * 1024), SCOPE, page_size=20)
    assert decoded.key == "k" * 1024


def test_a_token_whose_key_holds_nul_is_not_a_page_token() -> None:
    assert _refusal(_raw_token(key=b"s-\x00")) == page_tokens.NOT_A_PAGE_TOKEN


@pytest.mark.parametrize("version", [0, 4, 255])
def test_a_token_of_an_unknown_version_is_not_a_page_token(version: int) -> None:
    assert _refusal(_raw_token(version=version)) == page_tokens.NOT_A_PAGE_TOKEN


@pytest.mark.parametrize("kind", [0, 3, 255])
def test_a_token_of_an_unknown_kind_is_not_a_page_token(kind: int) -> None:
    assert _refusal(_raw_token(kind=kind)) == page_tokens.NOT_A_PAGE_TOKEN


# --- Older versions -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kind", [KIND_SESSIONS, KIND_MESSAGES])
def test_a_token_of_an_older_version_says_to_start_again(version: int, kind: int) -> None:
    # 1 carried a clamped time (rows at 'infinity' could not be found again); 2 bound the page
    # size and numbered pages. Their holders are told to start again, not that it is garbage.
    assert _refusal(_old_token(version=version, kind=kind)) == page_tokens.OLDER_VERSION
    assert page_tokens.OLDER_VERSION.startswith("is from an older version of this service")


def test_a_version_two_token_with_a_long_key_still_says_to_start_again() -> None:
    assert _refusal(_old_token(version=2, key=b"s" * 255)) == page_tokens.OLDER_VERSION


def test_bytes_that_only_start_like_an_older_version_are_not_a_page_token() -> None:
    # Too short for the old header, or an unknown kind: not a token any version issued.
    assert _refusal(_token_from_raw(b"\x02\x01abc")) == page_tokens.NOT_A_PAGE_TOKEN
    assert _refusal(_old_token(version=2, kind=9)) == page_tokens.NOT_A_PAGE_TOKEN


# --- Scope: which of method, tenant and query differs -------------------------------------------


def test_a_sessions_token_given_to_the_messages_call_is_of_another_method() -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    messages = page_tokens.messages_scope("tenant-a", "s-1")
    assert _refusal(token, messages) == page_tokens.OTHER_METHOD


def test_a_messages_token_given_to_the_sessions_call_is_of_another_method() -> None:
    token = page_tokens.encode(CURSOR, page_tokens.messages_scope("tenant-a", "s-1"))
    assert _refusal(token, SCOPE) == page_tokens.OTHER_METHOD


def test_a_token_of_another_tenant_says_so() -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    other = page_tokens.sessions_scope("tenant-b", NO_FILTERS)
    assert _refusal(token, other) == page_tokens.OTHER_TENANT == "was issued for another tenant"


def test_another_tenant_is_named_before_other_filters() -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    assert _refusal(token, page_tokens.sessions_scope("tenant-b", CLOSED)) == (
        page_tokens.OTHER_TENANT
    )


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param(CLOSED, id="status"),
        pytest.param(SessionFilters(None, NEW_YEAR, None, None), id="start"),
        pytest.param(SessionFilters(None, None, NEW_YEAR, None), id="end"),
        pytest.param(SessionFilters(None, None, None, "web"), id="channel_type"),
    ],
)
def test_a_sessions_token_with_other_filters_names_the_filters(filters: SessionFilters) -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    description = _refusal(token, page_tokens.sessions_scope("tenant-a", filters))
    assert description == page_tokens.OTHER_FILTERS
    for name in ("status", "start_time", "end_time", "channel_type"):
        assert name in description


def test_a_messages_token_for_another_session_says_so() -> None:
    token = page_tokens.encode(CURSOR, page_tokens.messages_scope("tenant-a", "s-1"))
    other = page_tokens.messages_scope("tenant-a", "s-2")
    assert _refusal(token, other) == page_tokens.OTHER_SESSION == "was issued for another session"


def test_a_messages_token_of_another_tenant_says_so() -> None:
    token = page_tokens.encode(CURSOR, page_tokens.messages_scope("tenant-a", "s-1"))
    other = page_tokens.messages_scope("tenant-b", "s-1")
    assert _refusal(token, other) == page_tokens.OTHER_TENANT


def test_scopes_are_stable_for_equal_parts_and_differ_for_any_changed_part() -> None:
    base = page_tokens.sessions_scope("tenant-a", CLOSED)
    same = SessionFilters("closed", None, None, None)
    assert page_tokens.sessions_scope("tenant-a", same) == base
    assert len(base.tenant) == len(base.query) == 4
    assert page_tokens.sessions_scope("tenant-b", CLOSED).tenant != base.tenant
    assert page_tokens.sessions_scope("tenant-b", CLOSED).query == base.query
    assert page_tokens.sessions_scope("tenant-a", NO_FILTERS).query != base.query
    assert page_tokens.sessions_scope("tenant-a", NO_FILTERS).tenant == base.tenant
    assert page_tokens.messages_scope("tenant-a", "s-1").tenant == base.tenant
    assert page_tokens.messages_scope("tenant-a", "s-1") != page_tokens.messages_scope(
        "tenant-a", "s-2"
    )


# --- The offset ------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 7, 20, 100, 1000])
def test_a_token_is_accepted_at_any_page_size(page_size: int) -> None:
    token = page_tokens.encode(CURSOR, SCOPE)
    assert page_tokens.decode(token, SCOPE, page_size=page_size) == CURSOR


@pytest.mark.parametrize(
    ("offset", "page_size", "page"),
    [(0, 20, 1), (19, 20, 1), (20, 20, 2), (20, 3, 7), (21, 3, 8), (10, 100, 1), (5, 1, 6)],
)
def test_the_page_holding_a_row_at_a_page_size(offset: int, page_size: int, page: int) -> None:
    assert page_tokens.page_of(offset, page_size) == page


@pytest.mark.parametrize("offset", [0, -1, -(2**63)])
def test_a_token_leading_to_the_first_row_or_before_it_is_not_a_page_token(offset: int) -> None:
    # A token always follows at least one row returned.
    assert _refusal(_raw_token(offset=offset)) == page_tokens.NOT_A_PAGE_TOKEN


def test_the_deepest_offset_whose_page_number_fits_int32_is_accepted() -> None:
    # At page size 1, offset MAX_PAGE - 1 is page MAX_PAGE; at 100, a hundred times deeper.
    assert page_tokens.decode(_raw_token(offset=MAX_PAGE - 1), SCOPE, page_size=1).offset == (
        MAX_PAGE - 1
    )
    deepest = MAX_PAGE * 100 - 1
    assert page_tokens.decode(_raw_token(offset=deepest), SCOPE, page_size=100).offset == deepest


@pytest.mark.parametrize(
    ("offset", "page_size"),
    [(MAX_PAGE, 1), (MAX_PAGE * 100, 100), (2**63 - 1, 1000), (2**63 - 1, 1)],
)
def test_an_offset_whose_page_number_would_overflow_int32_is_refused(
    offset: int, page_size: int
) -> None:
    assert _refusal(_raw_token(offset=offset), page_size=page_size) == page_tokens.PAST_LAST_PAGE


def test_a_page_size_below_one_does_not_break_the_offset_check() -> None:
    # Validation refuses such a page size on its own; decoding must still only raise PageTokenError.
    assert page_tokens.decode(_raw_token(offset=5), SCOPE, page_size=0).offset == 5
    assert _refusal(_raw_token(offset=MAX_PAGE), page_size=-3) == page_tokens.PAST_LAST_PAGE


# --- The created time's key ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [LAST_STORABLE_KEY + 1, 2**63 - 2, FIRST_STORABLE_KEY - 1, -(2**62)]
)
def test_a_token_whose_time_no_timestamptz_can_hold_is_not_a_page_token(key: int) -> None:
    assert _refusal(_raw_token(micros=key)) == page_tokens.NOT_A_PAGE_TOKEN


@pytest.mark.parametrize(
    "key", [LAST_STORABLE_KEY, FIRST_STORABLE_KEY, INFINITY_KEY, MINUS_INFINITY_KEY]
)
def test_a_token_at_the_ends_of_what_a_timestamptz_holds_is_accepted(key: int) -> None:
    token = _raw_token(micros=key)
    assert page_tokens.decode(token, SCOPE, page_size=20).created_key == key
