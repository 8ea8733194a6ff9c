"""Opaque keyset page tokens: where a walk through a list stands, and what it must go on with.

A token (format version 3) carries, after its version and its kind (sessions or messages):

- a 4-byte digest of the tenant and a 4-byte digest of the query it was issued for (ListSessions:
  the filters as validated; GetSessionDetail: the session id), so that a token reused with
  another tenant, other filters or another session is refused with a message saying which;
- the sort key of the last row returned (the stored created time's exact key, see
  server.domain.time_keys, and, at the end of the token, the row's unique tie-break): the next
  page resumes strictly after it;
- the offset: how many rows the walk had returned before the page the token leads to. It only
  numbers pages (Pagination.page is offset // page_size + 1); the keyset, not the offset, decides
  which rows come next. So the page size is not part of a token's scope and may change between
  calls of one walk (AIP-158); the tenant and the query may not.

It is not signed: the tenant predicate on every query already confines a forged token to the
caller's own rows, so the digests exist to catch mistakes (a token reused with other filters), not
attackers. A forged token can choose only where in the caller's own rows to resume and which page
number to show, and decode bounds that number to Pagination.page's int32.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from server.domain.filters import SessionFilters
from server.domain.time_keys import is_storable

_VERSION = 3
# version, kind, tenant digest, query digest, created time's key, offset; the tie-break follows.
_HEADER = struct.Struct(">BB4s4sqq")
# Versions 1 and 2 (version, kind, 8-byte digest of tenant, filters and page size, created time,
# page number), recognised only to tell their holders to start again. 1 carried a clamped created
# time, which lost rows stored at infinity; 2 bound the page size.
_OLD_VERSIONS = frozenset({1, 2})
_OLD_HEADER = struct.Struct(">BB8sqI")
_MAX_KEY_BYTES = 1024
_DIGEST_BYTES = 4

# Pagination.page is an int32.
MAX_PAGE = 2**31 - 1

KIND_SESSIONS = 1
KIND_MESSAGES = 2
_KINDS = frozenset({KIND_SESSIONS, KIND_MESSAGES})

# FieldViolation descriptions on page_token, most specific first.
NOT_A_PAGE_TOKEN = "is not a page token"  # noqa: S105 -- a description, not a secret
OLDER_VERSION = "is from an older version of this service: start again from the first page"
OTHER_METHOD = "is a page token of another method"
OTHER_TENANT = "was issued for another tenant"
OTHER_FILTERS = (
    "was issued for other filters: status, start_time, end_time and channel_type must stay as "
    "they were on the first page"
)
OTHER_SESSION = "was issued for another session"
PAST_LAST_PAGE = (
    f"leads past page {MAX_PAGE}, the last page number, at this page_size: ask for a larger "
    "page_size"
)
_OTHER_QUERY = {KIND_SESSIONS: OTHER_FILTERS, KIND_MESSAGES: OTHER_SESSION}


class PageTokenError(ValueError):
    """Raised when a page token is corrupt or does not belong to the call it came with; its text
    is the FieldViolation description."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The sort key of the last row of a page, and how many rows the walk has returned so far."""

    created_key: int  # the stored created time's sort key (server.domain.time_keys)
    key: str
    offset: int  # rows returned before the page this cursor leads to


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token must be reused with: its method's kind and digests of tenant and query."""

    kind: int
    tenant: bytes
    query: bytes


def sessions_scope(tenant_id: str, filters: SessionFilters) -> Scope:
    """The scope of ListSessions tokens: the tenant and every filter (not the page size)."""
    query = (filters.status, filters.created_from, filters.created_to, filters.channel_type)
    return Scope(KIND_SESSIONS, digest(tenant_id), digest(*query))


def messages_scope(tenant_id: str, session_id: str) -> Scope:
    """The scope of GetSessionDetail tokens: the tenant and the session (not the page size)."""
    return Scope(KIND_MESSAGES, digest(tenant_id), digest(session_id))


def page_of(offset: int, page_size: int) -> int:
    """The 1-based number, at `page_size`, of the page holding row `offset` (0-based)."""
    return offset // page_size + 1


def encode(cursor: Cursor, scope: Scope) -> str:
    """The URL-safe token for `cursor`."""
    header = _HEADER.pack(
        _VERSION, scope.kind, scope.tenant, scope.query, cursor.created_key, cursor.offset
    )
    raw = header + cursor.key.encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, scope: Scope, *, page_size: int) -> Cursor:
    """The cursor in `token`, checked against the scope and page size of the call it came with.

    Raises PageTokenError, and nothing else, for any text: its message says what is wrong.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise PageTokenError(NOT_A_PAGE_TOKEN) from None
    if _is_old_token(raw):
        raise PageTokenError(OLDER_VERSION)
    if not _HEADER.size <= len(raw) <= _HEADER.size + _MAX_KEY_BYTES or raw[0] != _VERSION:
        raise PageTokenError(NOT_A_PAGE_TOKEN)
    _, kind, tenant, query, created_key, offset = _HEADER.unpack_from(raw)
    try:
        key = raw[_HEADER.size :].decode()
    except UnicodeDecodeError:
        raise PageTokenError(NOT_A_PAGE_TOKEN) from None
    # NUL cannot occur in a PostgreSQL text key, and a token always follows at least one row, so
    # only a forged token carries either.
    if kind not in _KINDS or "\x00" in key or not is_storable(created_key) or offset < 1:
        raise PageTokenError(NOT_A_PAGE_TOKEN)
    if kind != scope.kind:
        raise PageTokenError(OTHER_METHOD)
    if tenant != scope.tenant:
        raise PageTokenError(OTHER_TENANT)
    if query != scope.query:
        raise PageTokenError(_OTHER_QUERY[kind])
    # The caller refuses page sizes below 1 separately; max() only keeps this check total.
    if page_of(offset, max(page_size, 1)) > MAX_PAGE:
        raise PageTokenError(PAST_LAST_PAGE)
    return Cursor(created_key=created_key, key=key, offset=offset)


def _is_old_token(raw: bytes) -> bool:
    return (
        _OLD_HEADER.size <= len(raw) <= _OLD_HEADER.size + _MAX_KEY_BYTES
        and raw[0] in _OLD_VERSIONS
        and raw[1] in _KINDS
    )


def digest(*parts: object) -> bytes:
    """A short digest of `parts`, binding a token to what it was issued for."""
    return hashlib.sha256(repr(parts).encode()).digest()[:_DIGEST_BYTES]
