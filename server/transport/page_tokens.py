"""Opaque keyset page tokens: encode where a page ended, and refuse tokens issued for another query.

A token carries the sort key of the last row returned (the stored created time's exact key, see
server.domain.time_keys, and a unique tie-break), the
number of the page it leads to, and a fingerprint of the tenant and every filter it was issued
for. It is not signed: the tenant predicate on every query already confines a forged token to the
caller's own rows, so the fingerprint exists to catch mistakes (a token reused with other
filters), not attackers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from server.domain.time_keys import is_storable

_VERSION = 2  # 1 carried a clamped created time, which lost rows stored at infinity
_HEADER = struct.Struct(">BB8sqI")  # version, kind, fingerprint, created time's key, page
_MAX_KEY_BYTES = 1024

# Pagination.page is an int32.
MAX_PAGE = 2**31 - 1

KIND_SESSIONS = 1
KIND_MESSAGES = 2


class PageTokenError(ValueError):
    """Raised when a page token is corrupt or was issued for another query."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The sort key of the last row of a page, and the number of the page that follows it."""

    created_key: int  # the stored created time's sort key (server.domain.time_keys)
    key: str
    page: int


def fingerprint(*parts: object) -> bytes:
    """An 8-byte digest of everything a token must be reused with (tenant, filters, page size)."""
    return hashlib.sha256(repr(parts).encode()).digest()[:8]


def encode(cursor: Cursor, *, kind: int, query_fingerprint: bytes) -> str:
    """The URL-safe token for `cursor`."""
    header = _HEADER.pack(_VERSION, kind, query_fingerprint, cursor.created_key, cursor.page)
    raw = header + cursor.key.encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, *, kind: int, query_fingerprint: bytes) -> Cursor:
    """The cursor in `token`, checked against the query it is being used with."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise PageTokenError("is not a page token") from None
    if len(raw) < _HEADER.size or len(raw) > _HEADER.size + _MAX_KEY_BYTES:
        raise PageTokenError("is not a page token")
    version, token_kind, token_fingerprint, created_key, page = _HEADER.unpack_from(raw)
    if version != _VERSION or token_kind != kind:
        raise PageTokenError("is not a page token for this call")
    if token_fingerprint != query_fingerprint:
        raise PageTokenError("was issued for another tenant, other filters or another page size")
    try:
        key = raw[_HEADER.size :].decode()
    except UnicodeDecodeError:
        raise PageTokenError("is not a page token") from None
    # NUL cannot occur in a PostgreSQL text key, so only a forged token carries one.
    if not 2 <= page <= MAX_PAGE or "\x00" in key or not is_storable(created_key):
        raise PageTokenError("is not a page token")
    return Cursor(created_key=created_key, key=key, page=page)
