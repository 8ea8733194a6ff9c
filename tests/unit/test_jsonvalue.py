"""Stored JSON to protobuf Struct/Value: every JSON shape, depth truncation, non-finite numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from server.transport.jsonvalue import MAX_DEPTH, TRUNCATED, fill_struct, fill_value


def to_value(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    fill_value(value, data)
    return value


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    fill_struct(struct, data)
    return struct


def _nested_lists(levels: int) -> Any:
    data: Any = "leaf"
    for _ in range(levels):
        data = [data]
    return data


def _nested_objects(levels: int) -> dict[str, Any]:
    data: Any = "leaf"
    for _ in range(levels):
        data = {"k": data}
    assert isinstance(data, dict)
    return data


def _innermost_of_lists(value: struct_pb2.Value) -> tuple[int, struct_pb2.Value]:
    levels = 0
    while value.WhichOneof("kind") == "list_value":
        [value] = value.list_value.values
        levels += 1
    return levels, value


def _innermost_of_struct(struct: struct_pb2.Struct) -> tuple[int, struct_pb2.Value]:
    levels = 1
    value = struct.fields["k"]
    while value.WhichOneof("kind") == "struct_value":
        value = value.struct_value.fields["k"]
        levels += 1
    return levels, value


def test_empty_objects_and_lists_keep_their_kind_even_when_nested() -> None:
    assert to_value({}).WhichOneof("kind") == "struct_value"
    assert to_value([]).WhichOneof("kind") == "list_value"
    nested = to_struct({"o": {}, "l": [], "ll": [[]]})
    assert json_format.MessageToDict(nested) == {"o": {}, "l": [], "ll": [[]]}
    # Filled in place over an existing message, the result is the same as a fresh one.
    target = struct_pb2.Value()
    fill_value(target.struct_value.fields["x"], [])
    assert json_format.MessageToDict(target) == {"x": []}


def test_json_scalars_map_to_their_value_kinds() -> None:
    assert to_value(None).WhichOneof("kind") == "null_value"
    assert to_value(True).bool_value is True
    assert to_value(False).WhichOneof("kind") == "bool_value"
    assert to_value(0).WhichOneof("kind") == "number_value"
    assert to_value(3).number_value == 3.0
    assert to_value(-2.5).number_value == -2.5
    assert to_value("").WhichOneof("kind") == "string_value"
    assert to_value("héllo").string_value == "héllo"


def test_objects_and_lists_keep_their_shape() -> None:
    data = {"a": [1, "two", None, {"b": False}], "c": {}, "d": []}
    assert json_format.MessageToDict(to_struct(data)) == data
    assert json_format.MessageToDict(to_value(data)) == data


def test_non_text_keys_become_text() -> None:
    data: dict[Any, Any] = {1: "x", None: "y"}
    assert set(to_struct(data).fields) == {"1", "None"}


def test_values_of_other_python_types_become_their_text() -> None:
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    assert to_value(moment).string_value == str(moment)


def test_lists_nested_just_below_the_limit_are_kept_whole() -> None:
    levels, innermost = _innermost_of_lists(to_value(_nested_lists(MAX_DEPTH - 1)))
    assert levels == MAX_DEPTH - 1
    assert innermost.string_value == "leaf"


def test_lists_nested_to_the_limit_end_in_the_truncation_marker() -> None:
    levels, innermost = _innermost_of_lists(to_value(_nested_lists(MAX_DEPTH)))
    assert levels == MAX_DEPTH
    assert innermost.string_value == TRUNCATED


def test_objects_nested_just_below_the_limit_are_kept_whole() -> None:
    levels, innermost = _innermost_of_struct(to_struct(_nested_objects(MAX_DEPTH - 1)))
    assert levels == MAX_DEPTH - 1
    assert innermost.string_value == "leaf"


def test_objects_nested_past_the_limit_end_in_the_truncation_marker() -> None:
    # A Struct counts as a level just as a Value holding it does.
    levels, innermost = _innermost_of_struct(to_struct(_nested_objects(MAX_DEPTH + 5)))
    assert levels == MAX_DEPTH
    assert innermost.string_value == TRUNCATED


def test_objects_inside_a_value_truncate_at_the_same_depth_as_lists() -> None:
    value = to_value(_nested_objects(MAX_DEPTH + 5))
    levels, innermost = _innermost_of_struct(value.struct_value)
    assert levels == MAX_DEPTH
    assert innermost.string_value == TRUNCATED


def test_very_deep_metadata_still_parses_on_the_client() -> None:
    # protobuf refuses to parse messages nested past 100 levels; truncation keeps us under that.
    data = {"outer": _nested_lists(500), "deep": _nested_objects(500)}
    struct = to_struct(data)
    parsed = struct_pb2.Struct.FromString(struct.SerializeToString())
    assert parsed == struct


@pytest.mark.parametrize(
    ("number", "text"), [(math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan")]
)
def test_non_finite_numbers_are_kept_as_text(number: float, text: str) -> None:
    value = to_value(number)
    assert value.WhichOneof("kind") == "string_value"
    assert value.string_value == text
    # A non-finite number_value would make the JSON form of the response unserialisable.
    json_format.MessageToJson(to_struct({"n": number}))


def test_integers_too_large_for_a_double_are_kept_as_text() -> None:
    # JSONB keeps arbitrary-precision numbers and json decoding returns them as exact ints.
    huge = 10**400
    value = to_value(huge)
    assert value.WhichOneof("kind") == "string_value"
    assert value.string_value == str(huge)


def test_large_integers_within_double_range_stay_numbers() -> None:
    assert to_value(2**70).number_value == float(2**70)
