"""JSON (as stored in JSONB) to google.protobuf Struct/Value, safe for any stored shape.

Other services write the metadata, so it can be nested past protobuf's recursion limit (100),
which would make the response unreadable for the client. Values deeper than MAX_DEPTH JSON levels
are replaced by a marker string instead.

Hand-written rather than protobuf's `Struct.update`: that copies any depth (which the client
then cannot parse) and fails on integers past a double's range; filling in place is also the
faster way (BENCHMARKS.md, "Decisions").
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

# Each JSON level costs about three protobuf levels (Value, Struct, map entry) and a tool call's
# arguments already sit four levels deep in a response: 20 keeps every response decodable.
MAX_DEPTH = 20
TRUNCATED = "<truncated: nested too deeply>"


def fill_value(target: struct_pb2.Value, data: Any, *, depth: int = 0) -> None:
    """Set `target` to `data`, in place (nested messages are built where they live)."""
    if depth >= MAX_DEPTH:
        target.string_value = TRUNCATED
    elif data is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        target.bool_value = data
    elif isinstance(data, str):
        target.string_value = data
    elif isinstance(data, int | float):
        try:
            number = float(data)
        except OverflowError:  # JSONB keeps integers of any size; a double cannot
            number = math.inf
        if math.isfinite(number):
            target.number_value = number
        else:  # keep the information as text rather than fail
            target.string_value = str(data)
    elif isinstance(data, dict):
        fill_struct(target.struct_value, data, depth=depth)
    elif isinstance(data, list):
        values = target.list_value.values
        if not data:
            target.list_value.SetInParent()  # an empty list is still a list, not "no value"
        for item in data:
            fill_value(values.add(), item, depth=depth + 1)
    else:
        target.string_value = str(data)


def fill_struct(target: struct_pb2.Struct, data: dict[str, Any], *, depth: int = 0) -> None:
    """Set `target` to the JSON object `data`, in place."""
    if not data:
        target.SetInParent()  # an empty object is still an object
    fields = target.fields
    for key, item in data.items():
        fill_value(fields[str(key)], item, depth=depth + 1)
