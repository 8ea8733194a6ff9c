"""Trace extraction: what the assistant retrieved, which tools it called, and what failed.

Reads the `retrieval`, `tool_calls` and `error` keys of assistant-message metadata. Entries that
are malformed or of unknown shape are skipped one by one; a bad entry never hides a good one and
never fails the call.
"""

from __future__ import annotations

from typing import Any

from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.transport.jsonvalue import fill_struct, fill_value

ASSISTANT_ROLE = "assistant"
_TOOL_STATUSES: dict[str, pb.ToolCallStatus] = {
    "ok": pb.TOOL_CALL_STATUS_OK,
    "error": pb.TOOL_CALL_STATUS_ERROR,
}


def add_to_trace(trace: pb.Trace, message_id: int, role: str | None, metadata: Any) -> None:
    """Append what message `message_id` retrieved, called and failed to `trace`, in place.

    Takes the message's parts rather than an object holding them: this runs for every message of
    every detail page, and building one object per message cost a tenth of the trace's time.
    """
    if role != ASSISTANT_ROLE or not isinstance(metadata, dict):
        return
    for item in _as_list(metadata.get("retrieval")):
        _add_retrieval_hit(trace, message_id, item)
    for item in _as_list(metadata.get("tool_calls")):
        _add_tool_call(trace, message_id, item)
    error = metadata.get("error")
    for item in error if isinstance(error, list) else [error]:
        _add_trace_error(trace, message_id, item)


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


def _add_retrieval_hit(trace: pb.Trace, message_id: int, item: Any) -> None:
    if not isinstance(item, dict):
        return
    get = item.get  # straight-line lookups: this runs for every hit of every page
    source, document_id = get("source"), get("document_id")
    chunk_id, content = get("chunk_id"), get("content")
    # Hits as stored hold four strings: only an odd hit pays for converting each field.
    if not type(source) is type(document_id) is type(chunk_id) is type(content) is str:
        source, document_id = _text(source), _text(document_id)
        chunk_id, content = _text(chunk_id), _text(content)
        if source is None and document_id is None and chunk_id is None and content is None:
            return
    hit = trace.retrieval.add()
    hit.message_id = message_id  # attribute by attribute: cheaper in upb than keyword arguments
    hit.source = source or ""
    hit.document_id = document_id or ""
    hit.chunk_id = chunk_id or ""
    hit.content = content or ""
    score = get("score")
    if type(score) is not float:
        score = _number(score)
    if score is not None:
        hit.score = score


def _add_tool_call(trace: pb.Trace, message_id: int, item: Any) -> None:
    if not isinstance(item, dict):
        return
    name = _text(item.get("name"))
    if name is None:
        return  # a tool call without a tool name says nothing useful
    call = trace.tools.add()
    call.message_id = message_id
    call.id = _text(item.get("id")) or ""
    call.name = name
    call.status = _TOOL_STATUSES.get(
        _text(item.get("status")) or "", pb.TOOL_CALL_STATUS_UNSPECIFIED
    )
    arguments = item.get("arguments")
    if isinstance(arguments, dict):
        fill_struct(call.arguments, arguments)
    if "result" in item:
        fill_value(call.result, item["result"])
    latency = _number(item.get("latency_ms"))
    if latency is not None:
        call.latency_ms = latency
    error = item.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    call.error = _text(error) or ""


def _add_trace_error(trace: pb.Trace, message_id: int, item: Any) -> None:
    if not isinstance(item, dict):
        return
    code, text = _text(item.get("code")), _text(item.get("message"))
    if code is None and text is None:
        return
    trace.errors.add(message_id=message_id, code=code or "", message=text or "")
