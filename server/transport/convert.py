"""Pure mapping from database rows to protobuf messages.

Each function fills a message where it already lives in the response (`response.sessions.add()`,
`response.session`), because building a message apart and copying it into its parent costs
nearly twice as much (BENCHMARKS.md).
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.data.repository import MessageRow, SessionRow
from server.domain import status
from server.domain.time_keys import shown_micros, to_micros

_STORED_TO_STATUS = {
    status.ACTIVE: pb.SESSION_STATUS_ACTIVE,
    status.CLOSED: pb.SESSION_STATUS_CLOSED,
    status.EXPIRED: pb.SESSION_STATUS_EXPIRED,
}


def set_timestamp(target: timestamp_pb2.Timestamp, micros: int) -> None:
    """Set `target` to `micros` microseconds since the epoch."""
    # Integer arithmetic: exact, and several times faster than FromDatetime.
    seconds, rest = divmod(micros, 1_000_000)
    target.seconds = seconds
    target.nanos = rest * 1000


def set_stored_time(target: timestamp_pb2.Timestamp, key: int) -> None:
    """Set `target` to the stored time whose sort key is `key` (clamped to the Timestamp
    range: 'infinity' shows as its last moment)."""
    seconds, rest = divmod(shown_micros(key), 1_000_000)
    target.seconds = seconds
    target.nanos = rest * 1000


def fill_session(target: pb.Session, row: SessionRow) -> None:
    """Fill `target` with a chat_sessions row."""
    target.session_id = row.session_id
    target.tenant_id = row.tenant_id
    known = _STORED_TO_STATUS.get(row.status)
    if known is not None:
        target.status = known
    else:
        target.raw_status = row.status
    set_stored_time(target.start_time, row.created_key)
    set_stored_time(target.update_time, row.updated_key)
    target.message_count = row.message_count
    if row.channel_type is not None:
        target.channel_type = row.channel_type
    if row.status in status.TERMINAL_STATUSES and row.end_time is not None:
        ended = status.parse_end_time(row.end_time)
        if ended is not None:
            set_timestamp(target.end_time, to_micros(ended))


def fill_message(target: pb.Message, row: MessageRow) -> None:
    """Fill `target` with a chat_messages row; NULL role or content become empty strings."""
    target.id = row.id
    if row.role:
        target.role = row.role
    if row.content:
        target.content = row.content
    set_stored_time(target.create_time, row.created_key)
