"""Trace extraction: what the assistant retrieved, which tools it called, and what failed.

Reads the `retrieval`, `tool_calls` and `error` keys of assistant-message metadata. Entries that
are malformed or of unknown shape are skipped one by one; a bad entry never hides a good one and
never fails the call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.jsonvalue import to_struct, to_value

ASSISTANT_ROLE = "assistant"
_TOOL_STATUSES: dict[str, pb.ToolCallStatus] = {
    "ok": pb.TOOL_CALL_STATUS_OK,
    "error": pb.TOOL_CALL_STATUS_ERROR,
}


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """The parts of a message the trace reads."""

    id: int
    role: str | None
    metadata: Any


def build_trace(messages: Iterable[TracedMessage]) -> pb.Trace:
    """The trace of `messages`, in message order."""
    trace = pb.Trace()
    for message in messages:
        if message.role != ASSISTANT_ROLE or not isinstance(message.metadata, dict):
            continue
        metadata = message.metadata
        for item in _as_list(metadata.get("retrieval")):
            hit = _retrieval_hit(message.id, item)
            if hit is not None:
                trace.retrieval.append(hit)
        for item in _as_list(metadata.get("tool_calls")):
            call = _tool_call(message.id, item)
            if call is not None:
                trace.tools.append(call)
        error = metadata.get("error")
        for item in error if isinstance(error, list) else [error]:
            trace_error = _trace_error(message.id, item)
            if trace_error is not None:
                trace.errors.append(trace_error)
    return trace


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """Identifiers may be stored as strings or numbers; anything else is malformed."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # JSONB keeps integers of any size; a double cannot
            return None
    return None


def _retrieval_hit(message_id: int, item: Any) -> pb.RetrievalHit | None:
    if not isinstance(item, dict):
        return None
    source, document_id, chunk_id, content = (
        _text(item.get(name)) for name in ("source", "document_id", "chunk_id", "content")
    )
    if source is None and document_id is None and chunk_id is None and content is None:
        return None
    hit = pb.RetrievalHit(
        message_id=message_id,
        source=source or "",
        document_id=document_id or "",
        chunk_id=chunk_id or "",
        content=content or "",
    )
    score = _number(item.get("score"))
    if score is not None:
        hit.score = score
    return hit


def _tool_call(message_id: int, item: Any) -> pb.ToolCall | None:
    if not isinstance(item, dict):
        return None
    name = _text(item.get("name"))
    if name is None:
        return None  # a tool call without a tool name says nothing useful
    call = pb.ToolCall(
        message_id=message_id,
        id=_text(item.get("id")) or "",
        name=name,
        status=_TOOL_STATUSES.get(_text(item.get("status")) or "", pb.TOOL_CALL_STATUS_UNSPECIFIED),
    )
    arguments = item.get("arguments")
    if isinstance(arguments, dict):
        call.arguments.CopyFrom(to_struct(arguments))
    if "result" in item:
        call.result.CopyFrom(to_value(item["result"]))
    latency = _number(item.get("latency_ms"))
    if latency is not None:
        call.latency_ms = latency
    error = item.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    call.error = _text(error) or ""
    return call


def _trace_error(message_id: int, item: Any) -> pb.TraceError | None:
    if not isinstance(item, dict):
        return None
    code, text = _text(item.get("code")), _text(item.get("message"))
    if code is None and text is None:
        return None
    return pb.TraceError(message_id=message_id, code=code or "", message=text or "")
