"""Pure mapping from database rows to protobuf messages.

Each function fills a message where it already lives in the response (`response.sessions.add()`,
`response.session`), because building a message apart and copying it into its parent costs
nearly twice as much (BENCHMARKS.md).
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.data.rows import MessageRow, SessionRow
from server.domain import status
from server.domain.time_keys import shown_micros

# The one mapping between stored status words and the API's enum, both ways.
STORED_TO_STATUS: dict[str, pb.SessionStatus] = {
    status.ACTIVE: pb.SESSION_STATUS_ACTIVE,
    status.CLOSED: pb.SESSION_STATUS_CLOSED,
    status.EXPIRED: pb.SESSION_STATUS_EXPIRED,
}
STATUS_TO_STORED: dict[int, str] = {value: word for word, value in STORED_TO_STATUS.items()}


def set_stored_time(target: timestamp_pb2.Timestamp, key: int) -> None:
    """Set `target` to the stored time whose sort key is `key` (clamped to the Timestamp
    range: 'infinity' shows as its last moment)."""
    target.FromMicroseconds(shown_micros(key))


def fill_session(target: pb.Session, row: SessionRow) -> None:
    """Fill `target` with a chat_sessions row."""
    target.session_id = row.session_id
    target.tenant_id = row.tenant_id
    known = STORED_TO_STATUS.get(row.status)
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
            target.end_time.FromDatetime(ended)


def fill_message(target: pb.Message, row: MessageRow) -> None:
    """Fill `target` with a chat_messages row; NULL role or content become empty strings."""
    target.id = row.id
    if row.role:
        target.role = row.role
    if row.content:
        target.content = row.content
    set_stored_time(target.create_time, row.created_key)
