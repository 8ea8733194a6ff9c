"""Trace extraction from assistant metadata: well-formed entries kept, malformed ones skipped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from google.protobuf import json_format
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.transport.trace import add_to_trace

Message = tuple[int, str | None, Any]  # id, role, metadata


def build_trace(messages: Iterable[Message]) -> pb.Trace:
    trace = pb.Trace()
    for message_id, role, metadata in messages:
        add_to_trace(trace, message_id, role, metadata)
    return trace


def _assistant(message_id: int, metadata: Any) -> Message:
    return (message_id, "assistant", metadata)


def _trace(metadata: Any, message_id: int = 7) -> pb.Trace:
    return build_trace([_assistant(message_id, metadata)])


def test_a_well_formed_retrieval_hit_is_read_in_full() -> None:
    trace = _trace(
        {
            "retrieval": [
                {
                    "source": "kb",
                    "document_id": "doc-1",
                    "chunk_id": "c-3",
                    "score": 0.82,
                    "content": "Refunds take 5 days.",
                }
            ]
        }
    )
    assert list(trace.retrieval) == [
        pb.RetrievalHit(
            message_id=7,
            source="kb",
            document_id="doc-1",
            chunk_id="c-3",
            score=0.82,
            content="Refunds take 5 days.",
        )
    ]


def test_a_well_formed_tool_call_is_read_in_full() -> None:
    trace = _trace(
        {
            "tool_calls": [
                {
                    "id": "call-1",
                    "name": "lookup_order",
                    "arguments": {"order": "A-1", "deep": {"n": [1, 2]}},
                    "result": {"state": "shipped"},
                    "status": "error",
                    "latency_ms": 125,
                    "error": {"message": "timeout", "code": "E1"},
                }
            ]
        }
    )
    [call] = trace.tools
    assert call.message_id == 7
    assert call.id == "call-1"
    assert call.name == "lookup_order"
    assert json_format.MessageToDict(call.arguments) == {"order": "A-1", "deep": {"n": [1, 2]}}
    assert json_format.MessageToDict(call.result) == {"state": "shipped"}
    assert call.status == pb.TOOL_CALL_STATUS_ERROR
    assert call.HasField("latency_ms")
    assert call.latency_ms == 125.0
    assert call.error == "timeout"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("ok", pb.TOOL_CALL_STATUS_OK),
        ("error", pb.TOOL_CALL_STATUS_ERROR),
        ("OK", pb.TOOL_CALL_STATUS_UNSPECIFIED),
        ("pending", pb.TOOL_CALL_STATUS_UNSPECIFIED),
        (None, pb.TOOL_CALL_STATUS_UNSPECIFIED),
        (1, pb.TOOL_CALL_STATUS_UNSPECIFIED),
    ],
)
def test_tool_call_status_words_map_to_the_enum_and_unknown_ones_to_unspecified(
    stored: Any, expected: pb.ToolCallStatus
) -> None:
    [call] = _trace({"tool_calls": [{"name": "t", "status": stored}]}).tools
    assert call.status == expected


def test_a_tool_call_error_given_as_text_is_kept() -> None:
    [call] = _trace({"tool_calls": [{"name": "t", "error": "boom"}]}).tools
    assert call.error == "boom"


def test_a_tool_call_with_only_a_name_leaves_the_optional_fields_unset() -> None:
    [call] = _trace({"tool_calls": [{"name": "t"}]}).tools
    assert call == pb.ToolCall(message_id=7, name="t")
    assert not call.HasField("arguments")
    assert not call.HasField("result")
    assert not call.HasField("latency_ms")


def test_a_null_tool_result_is_kept_as_an_explicit_null() -> None:
    [call] = _trace({"tool_calls": [{"name": "t", "result": None}]}).tools
    assert call.HasField("result")
    assert call.result.WhichOneof("kind") == "null_value"


def test_an_error_given_as_an_object_is_read() -> None:
    trace = _trace({"error": {"code": "RATE_LIMIT", "message": "slow down"}})
    assert list(trace.errors) == [
        pb.TraceError(message_id=7, code="RATE_LIMIT", message="slow down")
    ]


def test_errors_given_as_a_list_are_all_read_in_order() -> None:
    trace = _trace({"error": [{"code": "A"}, {"message": "second"}, {"code": 500, "message": "x"}]})
    assert [(e.code, e.message) for e in trace.errors] == [("A", ""), ("", "second"), ("500", "x")]


def test_numeric_identifiers_are_read_as_text() -> None:
    trace = _trace(
        {
            "retrieval": [{"document_id": 42, "chunk_id": 3.5}],
            "tool_calls": [{"id": 9, "name": 12}],
        }
    )
    [hit] = trace.retrieval
    assert (hit.document_id, hit.chunk_id) == ("42", "3.5")
    [call] = trace.tools
    assert (call.id, call.name) == ("9", "12")


def test_entries_are_attributed_to_their_message_in_message_order() -> None:
    trace = build_trace(
        [
            _assistant(1, {"retrieval": [{"source": "a"}], "tool_calls": [{"name": "first"}]}),
            (2, "user", {"tool_calls": [{"name": "from-user"}]}),
            _assistant(3, {"tool_calls": [{"name": "second"}], "error": {"code": "E"}}),
            _assistant(4, {"retrieval": [{"source": "b"}, {"source": "c"}]}),
        ]
    )
    assert [(h.message_id, h.source) for h in trace.retrieval] == [(1, "a"), (4, "b"), (4, "c")]
    assert [(c.message_id, c.name) for c in trace.tools] == [(1, "first"), (3, "second")]
    assert [(e.message_id, e.code) for e in trace.errors] == [(3, "E")]


# --- malformed metadata --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["user", "system", "tool", "Assistant", None])
def test_metadata_of_non_assistant_messages_is_ignored(role: str | None) -> None:
    metadata = {
        "retrieval": [{"source": "kb"}],
        "tool_calls": [{"name": "t"}],
        "error": {"code": "E"},
    }
    assert build_trace([(1, role, metadata)]) == pb.Trace()


@pytest.mark.parametrize("metadata", [None, [], ["retrieval"], "text", 3, True])
def test_assistant_metadata_that_is_not_an_object_is_skipped(metadata: Any) -> None:
    trace = build_trace([_assistant(1, metadata), _assistant(2, {"tool_calls": [{"name": "t"}]})])
    assert [(c.message_id, c.name) for c in trace.tools] == [(2, "t")]


@pytest.mark.parametrize("value", [None, {"source": "kb"}, "kb", 5])
def test_retrieval_and_tool_calls_that_are_not_lists_are_ignored(value: Any) -> None:
    assert _trace({"retrieval": value, "tool_calls": value}) == pb.Trace()


def test_malformed_retrieval_hits_are_skipped_and_good_ones_kept() -> None:
    trace = _trace(
        {
            "retrieval": [
                "kb",
                None,
                ["kb"],
                {},
                {"score": 0.9},
                {"source": True, "document_id": None, "chunk_id": ["x"], "content": {"a": 1}},
                {"source": "kept", "score": "high"},
                {"document_id": "kept-too", "score": True},
            ]
        }
    )
    assert [(h.source, h.document_id) for h in trace.retrieval] == [("kept", ""), ("", "kept-too")]
    # A non-numeric (or boolean) score is left unset rather than guessed.
    assert not any(h.HasField("score") for h in trace.retrieval)


def test_malformed_tool_calls_are_skipped_and_good_ones_kept() -> None:
    trace = _trace(
        {
            "tool_calls": [
                "lookup",
                None,
                {},
                {"id": "no-name"},
                {"name": None},
                {"name": True},
                {"name": {"x": 1}},
                {"name": "kept"},
            ]
        }
    )
    assert [c.name for c in trace.tools] == ["kept"]


def test_wrongly_typed_tool_call_fields_are_dropped_but_the_call_is_kept() -> None:
    [call] = _trace(
        {
            "tool_calls": [
                {
                    "name": "t",
                    "id": ["x"],
                    "arguments": ["not", "an", "object"],
                    "latency_ms": "12",
                    "status": ["ok"],
                    "error": {"code": "only-a-code"},
                }
            ]
        }
    ).tools
    assert call == pb.ToolCall(message_id=7, name="t")


def test_a_boolean_latency_is_not_taken_for_a_number() -> None:
    [call] = _trace({"tool_calls": [{"name": "t", "latency_ms": True}]}).tools
    assert not call.HasField("latency_ms")


def test_malformed_errors_are_skipped_and_good_ones_kept() -> None:
    trace = _trace(
        {
            "error": [
                "boom",
                None,
                5,
                {},
                {"code": None, "message": ["x"]},
                {"code": True},
                {"message": "kept"},
            ]
        }
    )
    assert [(e.code, e.message) for e in trace.errors] == [("", "kept")]


@pytest.mark.parametrize("error", ["boom", 5, None, True])
def test_an_error_that_is_neither_object_nor_list_is_ignored(error: Any) -> None:
    assert _trace({"error": error}) == pb.Trace()


def test_numbers_too_large_for_a_double_do_not_fail_the_trace() -> None:
    # JSONB stores arbitrary-precision numbers; json decoding hands them over as Python ints.
    huge = 10**400
    trace = _trace(
        {
            "retrieval": [{"source": "kb", "score": huge}],
            "tool_calls": [{"name": "t", "latency_ms": huge, "result": huge}],
        }
    )
    assert [h.source for h in trace.retrieval] == ["kb"]
    assert [c.name for c in trace.tools] == ["t"]
