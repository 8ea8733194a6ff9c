"""grpc.health.v1 and server reflection answer on the real server without a tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import WRITES_HEALTH_NAME

SERVICE = "sessionmonitoring.v1.SessionMonitoring"


@pytest.fixture
async def raw_channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel of its own, so these tests use no SessionMonitoring stub at all."""
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        yield channel


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(request)
    await call.done_writing()
    response = await call.read()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return response


@pytest.mark.parametrize("service", ["", SERVICE, WRITES_HEALTH_NAME])
async def test_health_check_reports_serving(raw_channel: grpc.aio.Channel, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(raw_channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_for_an_unknown_service_is_not_found(
    raw_channel: grpc.aio.Channel,
) -> None:
    stub = health_pb2_grpc.HealthStub(raw_channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_service_health_and_reflection(
    raw_channel: grpc.aio.Channel,
) -> None:
    response = await _reflect(raw_channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in response.list_services_response.service}
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_reflection_describes_the_four_rpcs_of_the_service(
    raw_channel: grpc.aio.Channel,
) -> None:
    response = await _reflect(
        raw_channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    services = {
        f"{file.package}.{service.name}": service for file in files for service in file.service
    }
    assert {method.name for method in services[SERVICE].method} == {
        "ListSessions",
        "GetSessionDetail",
        "UpdateSessionStatus",
        "WatchSessions",
    }
