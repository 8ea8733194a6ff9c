"""Pure mapping from database rows to protobuf messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server import status
from server.repository import MessageRow, SessionRow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_STORED_TO_STATUS = {
    status.ACTIVE: pb.SESSION_STATUS_ACTIVE,
    status.CLOSED: pb.SESSION_STATUS_CLOSED,
    status.EXPIRED: pb.SESSION_STATUS_EXPIRED,
}


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """`moment` (timezone-aware) as a protobuf Timestamp."""
    # Integer arithmetic: exact for every datetime, and several times faster than FromDatetime.
    seconds, micros = divmod((moment - _EPOCH) // _MICROSECOND, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)


def session(row: SessionRow) -> pb.Session:
    """A chat_sessions row as a Session."""
    stored = status.stored_status(row.metadata)
    known = _STORED_TO_STATUS.get(stored)
    message = pb.Session(
        session_id=row.session_id,
        tenant_id=row.tenant_id,
        status=known if known is not None else pb.SESSION_STATUS_UNSPECIFIED,
        raw_status="" if known is not None else stored,
        start_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        message_count=row.message_count,
    )
    if row.channel_type is not None:
        message.channel_type = row.channel_type
    if stored in status.TERMINAL_STATUSES:
        ended = status.end_time(row.metadata)
        if ended is not None:
            message.end_time.CopyFrom(timestamp(ended))
    return message


def message(row: MessageRow) -> pb.Message:
    """A chat_messages row as a Message; NULL role or content become empty strings."""
    return pb.Message(
        id=row.id,
        role=row.role or "",
        content=row.content or "",
        create_time=timestamp(row.created_at),
    )
