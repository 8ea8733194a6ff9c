"""Fitting a detail reply within what a default gRPC client receives (4 MiB): the session's
metadata, then as many messages and trace entries as fit, cutting a single oversized message.
A client asking for `full_content` raises its own receive limit and gets messages whole."""

from __future__ import annotations

from typing import Any

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.data.rows import MessageRow
from server.transport import convert
from server.transport.jsonvalue import fill_struct
from server.transport.trace import add_to_trace

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


def fill_metadata(response: pb.GetSessionDetailResponse, metadata: Any) -> None:
    """Set the reply's metadata when the stored metadata is an object that fits its budget."""
    if isinstance(metadata, dict):
        fill_struct(response.metadata, metadata)
        if response.metadata.ByteSize() > METADATA_BYTES_BUDGET:
            response.ClearField("metadata")
            response.metadata_truncated = True


def fill_messages(
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
    return _fill_measured(
        response,
        rows,
        RESPONSE_BYTES_BUDGET - fixed,
        None if whole else RECEIVE_LIMIT_BYTES - fixed,
    )


def _fill_measured(
    response: pb.GetSessionDetailResponse,
    rows: list[MessageRow],
    budget: int,
    limit: int | None,
) -> int:
    """`fill_messages` for a page that would not fit: add messages while their size and their
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
