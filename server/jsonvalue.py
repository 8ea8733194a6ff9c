"""JSON (as stored in JSONB) to google.protobuf Struct/Value, safe for any stored shape.

Other services write the metadata, so it can be nested past protobuf's recursion limit (100),
which would make the response unreadable for the client. Values deeper than MAX_DEPTH JSON levels
are replaced by a marker string instead.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

# Each JSON level costs about three protobuf levels (Value, Struct, map entry) and a tool call's
# arguments already sit four levels deep in a response: 20 keeps every response decodable.
MAX_DEPTH = 20
TRUNCATED = "<truncated: nested too deeply>"


def to_value(data: Any, *, depth: int = 0) -> struct_pb2.Value:
    """`data` as a protobuf Value."""
    value = struct_pb2.Value()
    if depth >= MAX_DEPTH:
        value.string_value = TRUNCATED
    elif data is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        try:
            number = float(data)
        except OverflowError:  # JSONB keeps integers of any size; a double cannot
            number = math.inf
        if math.isfinite(number):
            value.number_value = number
        else:  # keep the information as text rather than fail
            value.string_value = str(data)
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, dict):
        value.struct_value.CopyFrom(to_struct(data, depth=depth))
    elif isinstance(data, list):
        value.list_value.values.extend(to_value(item, depth=depth + 1) for item in data)
    else:
        value.string_value = str(data)
    return value


def to_struct(data: dict[str, Any], *, depth: int = 0) -> struct_pb2.Struct:
    """`data` (a JSON object) as a protobuf Struct."""
    result = struct_pb2.Struct()
    for key, item in data.items():
        result.fields[str(key)].CopyFrom(to_value(item, depth=depth + 1))
    return result
