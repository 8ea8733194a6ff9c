"""Page tokens: round trip, and refusal of corrupt, truncated, foreign or wrong-kind tokens."""

from __future__ import annotations

import base64
import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.time_keys import (
    FIRST_STORABLE_KEY,
    INFINITY_KEY,
    LAST_STORABLE_KEY,
    MINUS_INFINITY_KEY,
    key_of,
)
from server.transport import page_tokens
from server.transport.page_tokens import KIND_MESSAGES, KIND_SESSIONS, Cursor, PageTokenError

FINGERPRINT = page_tokens.fingerprint("tenant-a", "filters", 20)
CURSOR = Cursor(
    created_key=key_of(datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)), key="s-1", page=2
)
# Mirrors the private header layout so tests can forge tokens field by field.
HEADER = struct.Struct(">BB8sqI")
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _token_from_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw_token(
    *,
    version: int = 2,
    kind: int = KIND_SESSIONS,
    query_fingerprint: bytes = FINGERPRINT,
    micros: int = 0,
    page: int = 2,
    key: bytes = b"s-1",
) -> str:
    return _token_from_raw(HEADER.pack(version, kind, query_fingerprint, micros, page) + key)


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
    page=st.integers(min_value=2, max_value=page_tokens.MAX_PAGE),
    kind=st.sampled_from([KIND_SESSIONS, KIND_MESSAGES]),
    query_fingerprint=st.binary(min_size=8, max_size=8),
)
def test_any_cursor_survives_an_encode_decode_round_trip(
    created_key: int, key: str, page: int, kind: int, query_fingerprint: bytes
) -> None:
    original = Cursor(created_key=created_key, key=key, page=page)
    token = page_tokens.encode(original, kind=kind, query_fingerprint=query_fingerprint)
    decoded = page_tokens.decode(token, kind=kind, query_fingerprint=query_fingerprint)
    assert decoded == original
    assert set(token) <= URL_SAFE


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_decoding_arbitrary_text_raises_only_page_token_error(token: str) -> None:
    # Any other exception would surface to callers as INTERNAL instead of INVALID_ARGUMENT.
    with contextlib.suppress(PageTokenError):
        page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("x", id="one-character-is-never-valid-base64"),
        pytest.param("abcde", id="length-one-more-than-a-multiple-of-four"),
        pytest.param("é" * 40, id="non-ascii"),
        pytest.param("AAAA", id="shorter-than-the-header"),
        pytest.param("not a page token at all, just prose", id="prose"),
    ],
)
def test_corrupt_tokens_are_refused(token: str) -> None:
    with pytest.raises(PageTokenError):
        page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


def test_a_token_truncated_into_its_header_is_refused() -> None:
    token = page_tokens.encode(CURSOR, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)
    with pytest.raises(PageTokenError):
        page_tokens.decode(token[:20], kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


def test_a_token_truncated_inside_a_multibyte_key_character_is_refused() -> None:
    full = HEADER.pack(2, KIND_SESSIONS, FINGERPRINT, 0, 2) + "é".encode()
    with pytest.raises(PageTokenError):
        page_tokens.decode(
            _token_from_raw(full[:-1]), kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT
        )


def test_a_token_with_a_key_longer_than_the_limit_is_refused() -> None:
    token = _raw_token(key=b"k" * 1025)
    with pytest.raises(PageTokenError):
        page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


def test_a_token_of_the_first_version_is_refused() -> None:
    # Version 1 carried a clamped time; its rows at 'infinity' could not be found again.
    with pytest.raises(PageTokenError):
        page_tokens.decode(_raw_token(version=1), kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


def test_a_token_with_a_key_at_the_limit_is_accepted() -> None:
    token = _raw_token(key=b"k" * 1024)
    decoded = page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)
    assert decoded.key == "k" * 1024


def test_a_token_issued_for_another_query_fingerprint_is_refused() -> None:
    token = page_tokens.encode(CURSOR, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)
    other = page_tokens.fingerprint("tenant-b", "filters", 20)
    with pytest.raises(PageTokenError):
        page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=other)


def test_a_sessions_token_is_refused_by_the_messages_call() -> None:
    token = page_tokens.encode(CURSOR, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)
    with pytest.raises(PageTokenError):
        page_tokens.decode(token, kind=KIND_MESSAGES, query_fingerprint=FINGERPRINT)


def test_a_token_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(PageTokenError):
        page_tokens.decode(_raw_token(version=3), kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


@pytest.mark.parametrize("page", [0, 1])
def test_a_token_leading_to_page_one_or_below_is_refused(page: int) -> None:
    with pytest.raises(PageTokenError):
        page_tokens.decode(_raw_token(page=page), kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT)


@pytest.mark.parametrize(
    "key", [LAST_STORABLE_KEY + 1, 2**63 - 2, FIRST_STORABLE_KEY - 1, -(2**62)]
)
def test_a_token_whose_time_no_timestamptz_can_hold_is_refused(key: int) -> None:
    with pytest.raises(PageTokenError):
        page_tokens.decode(
            _raw_token(micros=key), kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT
        )


@pytest.mark.parametrize(
    "key", [LAST_STORABLE_KEY, FIRST_STORABLE_KEY, INFINITY_KEY, MINUS_INFINITY_KEY]
)
def test_a_token_at_the_ends_of_what_a_timestamptz_holds_is_accepted(key: int) -> None:
    token = _raw_token(micros=key)
    assert (
        page_tokens.decode(token, kind=KIND_SESSIONS, query_fingerprint=FINGERPRINT).created_key
        == key
    )


def test_the_fingerprint_is_stable_for_equal_parts_and_differs_for_any_changed_part() -> None:
    base = page_tokens.fingerprint("tenant-a", "closed", 20)
    assert page_tokens.fingerprint("tenant-a", "closed", 20) == base
    assert len(base) == 8
    assert page_tokens.fingerprint("tenant-b", "closed", 20) != base
    assert page_tokens.fingerprint("tenant-a", "active", 20) != base
    assert page_tokens.fingerprint("tenant-a", "closed", 21) != base


def test_a_token_claiming_a_page_beyond_int32_is_refused() -> None:
    fingerprint = page_tokens.fingerprint("t")
    forged = page_tokens.encode(
        page_tokens.Cursor(key_of(datetime(2026, 1, 1, tzinfo=UTC)), "s", page_tokens.MAX_PAGE + 1),
        kind=page_tokens.KIND_SESSIONS,
        query_fingerprint=fingerprint,
    )
    with pytest.raises(page_tokens.PageTokenError):
        page_tokens.decode(forged, kind=page_tokens.KIND_SESSIONS, query_fingerprint=fingerprint)
