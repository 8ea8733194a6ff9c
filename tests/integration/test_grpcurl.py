"""The real `grpcurl` binary, through reflection only, against the running server."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.transport import errors
from tests.factories import Factory, tenant_metadata

GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICE = "sessionmonitoring.v1.SessionMonitoring"
# Generous: only guards against a hung subprocess, never measures anything.
PROCESS_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Run:
    """What one grpcurl invocation produced."""

    returncode: int
    stdout: str
    stderr: str


async def _grpcurl(*args: str, stdin: str | None = None) -> Run:
    # The server lives on this event loop, so the subprocess must be awaited, never blocked on.
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(None if stdin is None else stdin.encode()),
            PROCESS_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def _error_details(run: Run) -> list[dict[str, Any]]:
    """The google.rpc.Status details grpcurl prints as JSON with -format-error."""
    status = json.loads(run.stderr)
    details: list[dict[str, Any]] = status["details"]
    return details


async def test_list_shows_the_service_health_and_reflection(grpc_target: str) -> None:
    run = await _grpcurl(grpc_target, "list")
    assert run.returncode == 0, run.stderr
    services = run.stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services


async def test_describe_shows_the_three_rpcs(grpc_target: str) -> None:
    run = await _grpcurl(grpc_target, "describe", SERVICE)
    assert run.returncode == 0, run.stderr
    for rpc in ("ListSessions", "GetSessionDetail", "UpdateSessionStatus"):
        assert f"rpc {rpc} (" in run.stdout


async def test_list_sessions_returns_json_matching_the_inserted_rows(
    grpc_target: str, stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    newest_first = await factory.sessions(tenant, 3, channel_type="whatsapp")
    run = await _grpcurl(
        "-H",
        f"x-tenant-id:{tenant}",
        "-d",
        '{"page_size": 2}',
        grpc_target,
        f"{SERVICE}/ListSessions",
    )
    assert run.returncode == 0, run.stderr
    output = json.loads(run.stdout)

    assert [s["session_id"] for s in output["sessions"]] == newest_first[:2]
    assert {s["tenant_id"] for s in output["sessions"]} == {tenant}
    assert {s["status"] for s in output["sessions"]} == {"SESSION_STATUS_ACTIVE"}
    assert {s["channel_type"] for s in output["sessions"]} == {"whatsapp"}
    # int64 fields are JSON strings in the proto3 JSON mapping.
    assert output["pagination"]["total"] == "3"
    assert output["pagination"]["total_pages"] == "2"
    # The same call through the generated stub must decode to the very same response.
    expected = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=2), metadata=tenant_metadata(tenant)
    )
    assert json_format.Parse(run.stdout, pb.ListSessionsResponse()) == expected


async def test_update_session_status_accepts_json_input_and_prints_the_session(
    grpc_target: str, stub: pb_grpc.SessionMonitoringStub, factory: Factory, tenant: str
) -> None:
    await factory.session(tenant, "chat-1", metadata={"topic": "billing"})
    request = json.dumps({"session_id": "chat-1", "status": "SESSION_STATUS_CLOSED"})
    run = await _grpcurl(
        "-H",
        f"x-tenant-id:{tenant}",
        "-d",
        "@",
        grpc_target,
        f"{SERVICE}/UpdateSessionStatus",
        stdin=request,
    )
    assert run.returncode == 0, run.stderr
    session = json.loads(run.stdout)["session"]
    assert session["session_id"] == "chat-1"
    assert session["status"] == "SESSION_STATUS_CLOSED"

    stored = await factory.metadata(tenant, "chat-1")
    assert stored["topic"] == "billing"
    assert stored["status"] == "closed"
    assert session["end_time"] == stored["endTime"]
    detail = await stub.GetSessionDetail(
        pb.GetSessionDetailRequest(session_id="chat-1"), metadata=tenant_metadata(tenant)
    )
    assert json_format.Parse(run.stdout, pb.UpdateSessionStatusResponse()).session == (
        detail.session
    )


async def test_a_call_without_tenant_exits_non_zero_with_unauthenticated_and_reason(
    grpc_target: str,
) -> None:
    run = await _grpcurl("-d", '{"page_size": 2}', grpc_target, f"{SERVICE}/ListSessions")
    assert run.returncode != 0
    assert run.stdout.strip() == ""
    assert "Unauthenticated" in run.stderr
    assert errors.REASON_MISSING_TENANT_ID in run.stderr


async def test_formatted_errors_carry_error_info_and_field_violations(
    grpc_target: str, tenant: str
) -> None:
    run = await _grpcurl(
        "-format-error",
        "-H",
        f"x-tenant-id:{tenant}",
        "-d",
        '{"page_size": 500}',
        grpc_target,
        f"{SERVICE}/ListSessions",
    )
    assert run.returncode != 0
    details = _error_details(run)
    by_type = {detail["@type"].rsplit("/", 1)[-1]: detail for detail in details}
    assert by_type["google.rpc.ErrorInfo"]["reason"] == errors.REASON_INVALID_ARGUMENT
    violations = by_type["google.rpc.BadRequest"]["field_violations"]
    assert [v["field"] for v in violations] == ["page_size"]


async def test_an_unknown_session_exits_non_zero_with_not_found_and_reason(
    grpc_target: str, tenant: str
) -> None:
    run = await _grpcurl(
        "-format-error",
        "-H",
        f"x-tenant-id:{tenant}",
        "-d",
        '{"session_id": "missing"}',
        grpc_target,
        f"{SERVICE}/GetSessionDetail",
    )
    assert run.returncode != 0
    status = json.loads(run.stderr)
    assert status["code"] == 5  # google.rpc.Code.NOT_FOUND
    assert [d["reason"] for d in status["details"]] == [errors.REASON_SESSION_NOT_FOUND]
