"""Opaque WatchSessions resume tokens: where a stream stands in the change log.

A token (format version 1, kind 3, so that page tokens and watch tokens are told apart) carries
a 4-byte digest of the tenant and one of the filters it was issued for (status, channel_type,
session_id), the change log's epoch (a log dropped and made again starts a new epoch, so its
positions are not confused with the old ones), the position of the last change the stream has
passed, and optionally a snapshot: a token from ListSessions' watch_token holds the page's
snapshot, and the stream leaves out the transactions that snapshot saw, because the page
already reflected them. Not signed, for the reason page tokens are not (server.transport.
page_tokens): every read is confined to the caller's tenant anyway.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from server.domain.watch import Snapshot, WatchFilters
from server.transport.page_tokens import digest

_VERSION = 1
_KIND_WATCH = 3
# version, kind, tenant digest, filters digest, epoch, position, xmin, xmax, in-progress count.
_HEADER = struct.Struct(">BB4s4sqqqqH")
_XID = struct.Struct(">q")
# A snapshot with more transactions in progress than this is left out of the token: the stream
# then starts at the position alone and may repeat what the page showed, never miss it.
MAX_IN_PROGRESS = 1024

NOT_A_WATCH_TOKEN = "is not a watch token"  # noqa: S105 -- a description, not a secret
OTHER_TENANT = "was issued for another tenant"
OTHER_FILTERS = (
    "was issued for other filters: status, channel_type and session_id must be those it was "
    "issued for"
)


class WatchTokenError(ValueError):
    """Raised when a token is corrupt or not for this call; its text is the FieldViolation
    description."""


@dataclass(frozen=True, slots=True)
class WatchPoint:
    """A stream's start: the log's epoch, the last position passed, and the snapshot whose
    transactions to leave out (None: none)."""

    epoch: int
    position: int
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class WatchScope:
    """What a token must be used with: digests of the tenant and the filters."""

    tenant: bytes
    filters: bytes


def watch_scope(tenant_id: str, filters: WatchFilters) -> WatchScope:
    """The scope of a stream's tokens."""
    return WatchScope(
        digest(tenant_id), digest(filters.status, filters.channel_type, filters.session_id)
    )


def encode(point: WatchPoint, scope: WatchScope) -> str:
    """The URL-safe token for `point`."""
    snapshot = point.snapshot
    if snapshot is not None and len(snapshot.in_progress) > MAX_IN_PROGRESS:
        snapshot = None
    xmin, xmax, in_progress = (
        (snapshot.xmin, snapshot.xmax, sorted(snapshot.in_progress)) if snapshot else (0, 0, [])
    )
    raw = _HEADER.pack(
        _VERSION,
        _KIND_WATCH,
        scope.tenant,
        scope.filters,
        point.epoch,
        point.position,
        xmin,
        xmax,
        len(in_progress),
    ) + b"".join(_XID.pack(xid) for xid in in_progress)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, scope: WatchScope) -> WatchPoint:
    """The point in `token`, checked against the scope of the call it came with. Raises
    WatchTokenError, and nothing else, for any text."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise WatchTokenError(NOT_A_WATCH_TOKEN) from None
    if len(raw) < _HEADER.size or raw[0] != _VERSION or raw[1] != _KIND_WATCH:
        raise WatchTokenError(NOT_A_WATCH_TOKEN)
    _, _, tenant, filters, epoch, position, xmin, xmax, count = _HEADER.unpack_from(raw)
    if len(raw) != _HEADER.size + count * _XID.size or position < 0 or count > MAX_IN_PROGRESS:
        raise WatchTokenError(NOT_A_WATCH_TOKEN)
    if tenant != scope.tenant:
        raise WatchTokenError(OTHER_TENANT)
    if filters != scope.filters:
        raise WatchTokenError(OTHER_FILTERS)
    snapshot = None
    if xmax > 0:
        in_progress = frozenset(
            _XID.unpack_from(raw, _HEADER.size + index * _XID.size)[0] for index in range(count)
        )
        snapshot = Snapshot(xmin, xmax, in_progress)
    return WatchPoint(epoch, position, snapshot)
