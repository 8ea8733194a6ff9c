"""Page tokens built by hand, as a reader of server/transport/page_tokens.py could build them:
the current layout (version 3) with any field chosen, and version 2 as the previous release
issued it. The layouts are written out here, not imported, so a change to the real one shows up
as failing tests."""

from __future__ import annotations

import base64
import hashlib
import struct

from server.domain.filters import SessionFilters

# version, kind, tenant digest, query digest, created time's key, offset; the tie-break follows.
HEADER_V3 = struct.Struct(">BB4s4sqq")
# version, kind, 8-byte digest of (tenant, filters or session id, page size), created time's key,
# the number of the page the token led to; the tie-break follows.
HEADER_V2 = struct.Struct(">BB8sqI")
KIND_SESSIONS = 1
KIND_MESSAGES = 2


def _urlsafe(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _digest(*parts: object, size: int) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()[:size]


def sessions_query_digest(filters: SessionFilters) -> bytes:
    return _digest(
        filters.status, filters.created_from, filters.created_to, filters.channel_type, size=4
    )


def forge(
    *, kind: int, tenant: str, query: bytes, micros: int, offset: int, key: str | bytes
) -> str:
    """A version 3 token for `tenant` whose query digest is `query`."""
    raw_key = key.encode() if isinstance(key, str) else key
    header = HEADER_V3.pack(3, kind, _digest(tenant, size=4), query, micros, offset)
    return _urlsafe(header + raw_key)


def forge_sessions(
    tenant: str, filters: SessionFilters, *, micros: int, offset: int, key: str | bytes
) -> str:
    return forge(
        kind=KIND_SESSIONS,
        tenant=tenant,
        query=sessions_query_digest(filters),
        micros=micros,
        offset=offset,
        key=key,
    )


def forge_messages(
    tenant: str, session_id: str, *, micros: int, offset: int, key: str | bytes
) -> str:
    return forge(
        kind=KIND_MESSAGES,
        tenant=tenant,
        query=_digest(session_id, size=4),
        micros=micros,
        offset=offset,
        key=key,
    )


def version_two(*, kind: int, scope: tuple[object, ...], micros: int, page: int, key: str) -> str:
    """A token as version 2 issued it; `scope` is what it fingerprinted: (tenant, filters, page
    size) for sessions, (tenant, session id, page size) for messages."""
    header = HEADER_V2.pack(2, kind, _digest(*scope, size=8), micros, page)
    return _urlsafe(header + key.encode())
