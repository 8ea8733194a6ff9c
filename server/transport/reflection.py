"""Server reflection that carries the proto's comments, so `grpcurl describe` prints the manual.

protoc's Python output keeps no source info, and grpc-reflection serializes descriptors from
the runtime pool, so through reflection every comment was lost. `make generate` also writes a
descriptor set with source info next to the generated code; this servicer answers with those
files in place of the pool's bare copies (anything else, e.g. health's files, as the library
does). A wrapper rather than a reimplementation: the library keeps the protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

# Defined at runtime behind a `sys.version_info` check that mypy cannot evaluate.
from grpc_reflection.v1alpha.reflection import aio as reflection_aio  # type: ignore[attr-defined]
from sessionmonitoring.v1 import session_monitoring_pb2

# Written by `make generate` (protoc --include_source_info --include_imports).
DESCRIPTOR_SET = "session_monitoring_descriptor_set.binpb"


def documented_files() -> dict[str, bytes]:
    """The serialized FileDescriptorProtos of our protos and their imports, with comments."""
    # Beside the generated module (a namespace package has no single folder to ask).
    raw = (Path(session_monitoring_pb2.__file__).parent / DESCRIPTOR_SET).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    for file in files:
        _clear_json_names(file.message_type)
    return {file.name: file.SerializeToString() for file in files}


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """Drop protoc's explicit json_name, as the runtime's descriptors carry none: grpcurl keeps
    printing fields by their proto names (`session_id`), as it did before comments were served."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


class DocumentedReflectionServicer(reflection_aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    """grpc-reflection's servicer, answering with documented file descriptors."""

    def __init__(self, service_names: Iterable[str], documented: Mapping[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = dict(documented)

    async def ServerReflectionInfo(  # noqa: N802 -- the RPC's name
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: Any,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                files = response.file_descriptor_response.file_descriptor_proto
                for index, serialized in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
                    files[index] = self._documented.get(name, serialized)
            yield response


def enable_documented_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for `service_names` (and reflection itself) with the protos' comments."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        DocumentedReflectionServicer(names, documented_files()), server
    )
