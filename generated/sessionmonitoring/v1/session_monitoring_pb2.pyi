import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_ACTIVE: _ClassVar[SessionStatus]
    SESSION_STATUS_CLOSED: _ClassVar[SessionStatus]
    SESSION_STATUS_EXPIRED: _ClassVar[SessionStatus]

class ToolCallStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_CALL_STATUS_UNSPECIFIED: _ClassVar[ToolCallStatus]
    TOOL_CALL_STATUS_OK: _ClassVar[ToolCallStatus]
    TOOL_CALL_STATUS_ERROR: _ClassVar[ToolCallStatus]

class WatchEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_EVENT_TYPE_UNSPECIFIED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SESSION_ADDED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SESSION_UPDATED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SESSION_REMOVED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_MESSAGE_ADDED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_BOOKMARK: _ClassVar[WatchEventType]
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_ACTIVE: SessionStatus
SESSION_STATUS_CLOSED: SessionStatus
SESSION_STATUS_EXPIRED: SessionStatus
TOOL_CALL_STATUS_UNSPECIFIED: ToolCallStatus
TOOL_CALL_STATUS_OK: ToolCallStatus
TOOL_CALL_STATUS_ERROR: ToolCallStatus
WATCH_EVENT_TYPE_UNSPECIFIED: WatchEventType
WATCH_EVENT_TYPE_SESSION_ADDED: WatchEventType
WATCH_EVENT_TYPE_SESSION_UPDATED: WatchEventType
WATCH_EVENT_TYPE_SESSION_REMOVED: WatchEventType
WATCH_EVENT_TYPE_MESSAGE_ADDED: WatchEventType
WATCH_EVENT_TYPE_BOOKMARK: WatchEventType

class Session(_message.Message):
    __slots__ = ("session_id", "tenant_id", "status", "start_time", "end_time", "message_count", "channel_type", "update_time", "raw_status")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RAW_STATUS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tenant_id: str
    status: SessionStatus
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    message_count: int
    channel_type: str
    update_time: _timestamp_pb2.Timestamp
    raw_status: str
    def __init__(self, session_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message_count: _Optional[int] = ..., channel_type: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., raw_status: _Optional[str] = ...) -> None: ...

class Pagination(_message.Message):
    __slots__ = ("page", "page_size", "total", "total_pages")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    page: int
    page_size: int
    total: int
    total_pages: int
    def __init__(self, page: _Optional[int] = ..., page_size: _Optional[int] = ..., total: _Optional[int] = ..., total_pages: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("status", "start_time", "end_time", "page", "page_size", "page_token", "channel_type")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    status: SessionStatus
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page: int
    page_size: int
    page_token: str
    channel_type: str
    def __init__(self, status: _Optional[_Union[SessionStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., channel_type: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "pagination", "next_page_token", "watch_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WATCH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    pagination: Pagination
    next_page_token: str
    watch_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., pagination: _Optional[_Union[Pagination, _Mapping]] = ..., next_page_token: _Optional[str] = ..., watch_token: _Optional[str] = ...) -> None: ...

class GetSessionDetailRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token", "full_content")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FULL_CONTENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    full_content: bool
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., full_content: _Optional[bool] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "role", "content", "create_time", "content_truncated", "content_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CONTENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    role: str
    content: str
    create_time: _timestamp_pb2.Timestamp
    content_truncated: bool
    content_bytes: int
    def __init__(self, id: _Optional[int] = ..., role: _Optional[str] = ..., content: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_truncated: _Optional[bool] = ..., content_bytes: _Optional[int] = ...) -> None: ...

class RetrievalHit(_message.Message):
    __slots__ = ("message_id", "source", "document_id", "chunk_id", "score", "content")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    source: str
    document_id: str
    chunk_id: str
    score: float
    content: str
    def __init__(self, message_id: _Optional[int] = ..., source: _Optional[str] = ..., document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., score: _Optional[float] = ..., content: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("message_id", "id", "name", "arguments", "result", "status", "latency_ms", "error")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    id: str
    name: str
    arguments: _struct_pb2.Struct
    result: _struct_pb2.Value
    status: ToolCallStatus
    latency_ms: float
    error: str
    def __init__(self, message_id: _Optional[int] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., status: _Optional[_Union[ToolCallStatus, str]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class TraceError(_message.Message):
    __slots__ = ("message_id", "code", "message")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    code: str
    message: str
    def __init__(self, message_id: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("retrieval", "tools", "errors")
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    retrieval: _containers.RepeatedCompositeFieldContainer[RetrievalHit]
    tools: _containers.RepeatedCompositeFieldContainer[ToolCall]
    errors: _containers.RepeatedCompositeFieldContainer[TraceError]
    def __init__(self, retrieval: _Optional[_Iterable[_Union[RetrievalHit, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[TraceError, _Mapping]]] = ...) -> None: ...

class GetSessionDetailResponse(_message.Message):
    __slots__ = ("session", "messages", "trace", "metadata", "next_page_token", "metadata_truncated", "trace_truncated")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METADATA_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRACE_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    session: Session
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    trace: Trace
    metadata: _struct_pb2.Struct
    next_page_token: str
    metadata_truncated: bool
    trace_truncated: bool
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., trace: _Optional[_Union[Trace, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., next_page_token: _Optional[str] = ..., metadata_truncated: _Optional[bool] = ..., trace_truncated: _Optional[bool] = ...) -> None: ...

class UpdateSessionStatusRequest(_message.Message):
    __slots__ = ("session_id", "status")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: SessionStatus
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ...) -> None: ...

class UpdateSessionStatusResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class WatchSessionsRequest(_message.Message):
    __slots__ = ("status", "channel_type", "session_id", "resume_token", "send_initial")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEND_INITIAL_FIELD_NUMBER: _ClassVar[int]
    status: SessionStatus
    channel_type: str
    session_id: str
    resume_token: str
    send_initial: bool
    def __init__(self, status: _Optional[_Union[SessionStatus, str]] = ..., channel_type: _Optional[str] = ..., session_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., send_initial: _Optional[bool] = ...) -> None: ...

class WatchSessionsResponse(_message.Message):
    __slots__ = ("type", "session", "message", "resume_token", "commit_time", "initial_events_end")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    INITIAL_EVENTS_END_FIELD_NUMBER: _ClassVar[int]
    type: WatchEventType
    session: Session
    message: Message
    resume_token: str
    commit_time: _timestamp_pb2.Timestamp
    initial_events_end: bool
    def __init__(self, type: _Optional[_Union[WatchEventType, str]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., resume_token: _Optional[str] = ..., commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., initial_events_end: _Optional[bool] = ...) -> None: ...
