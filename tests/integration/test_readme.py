"""Every grpcurl command of the README's session works as printed, against the demo data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from server.data.engine import asyncpg_dsn
from server.data.migrate import upgrade_to_head
from server.tools.demo import insert_demo_data
from server.transport.reflection import documented_files
from tests.helpers import serving

README = Path(__file__).resolve().parents[2] / "README.md"
DATA_MODEL = README.parent / "docs" / "data-model.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"


def readme_session_commands() -> list[str]:
    """The grpcurl lines of the README's 'A grpcurl cheat sheet' block."""
    text = README.read_text()
    section = text.split("## A grpcurl cheat sheet", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith(".venv/bin/grpcurl ")]


@pytest.fixture(scope="module")
async def demo_target(database_url: str, engine: AsyncEngine) -> AsyncIterator[str]:
    """A server over the test database holding the demo tenants (nobody else uses them)."""
    async with engine.begin() as conn:
        await insert_demo_data(conn)
    async with serving(database_url, db_pool_size=2, db_pool_timeout=5) as app:
        yield f"127.0.0.1:{app.port}"


def test_the_readme_session_has_commands_for_every_rpc_and_an_error() -> None:
    commands = "\n".join(readme_session_commands())
    for needed in (
        " list",
        " describe ",
        "/ListSessions",
        "/GetSessionDetail",
        "/UpdateSessionStatus",
        "# fails:",
    ):
        assert needed in commands


@pytest.mark.parametrize("command", readme_session_commands())
async def test_readme_command_behaves_as_documented(command: str, demo_target: str) -> None:
    runnable = command.replace(".venv/bin/grpcurl", str(GRPCURL)).replace(
        "localhost:50051", demo_target
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", runnable, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    expected_failure = re.search(r"# fails: (\w+)", command)
    if expected_failure:
        assert process.returncode != 0
        assert f"Code: {expected_failure.group(1)}" in err.decode()
    else:
        assert process.returncode == 0, err.decode()
        assert out.strip()


def _leading_comment(symbol: str) -> str:
    """The first line of the proto comment above message or service `symbol`."""
    file = descriptor_pb2.FileDescriptorProto.FromString(
        documented_files()["sessionmonitoring/v1/session_monitoring.proto"]
    )
    name = symbol.removeprefix(f"{file.package}.")
    # Paths into FileDescriptorProto: field 4 is message_type, field 6 is service.
    paths = {(4, index): message.name for index, message in enumerate(file.message_type)}
    paths.update({(6, index): service.name for index, service in enumerate(file.service)})
    for location in file.source_code_info.location:
        path = tuple(location.path)
        if (
            len(path) == 2
            and paths.get((path[0], path[1])) == name
            and location.leading_comments.strip()
        ):
            return location.leading_comments.strip().splitlines()[0]
    raise AssertionError(f"no comment above {symbol} in the proto")


@pytest.mark.parametrize("command", [c for c in readme_session_commands() if " describe " in c])
async def test_describe_prints_the_protos_comments_through_reflection(
    command: str, demo_target: str
) -> None:
    symbol = command.split(" describe ", 1)[1].split()[0]
    runnable = command.replace(".venv/bin/grpcurl", str(GRPCURL)).replace(
        "localhost:50051", demo_target
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", runnable, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert _leading_comment(symbol) in out.decode()


async def test_the_readme_detail_example_shows_all_three_kinds_of_trace_entries(
    demo_target: str,
) -> None:
    [command] = [
        c for c in readme_session_commands() if "/GetSessionDetail" in c and "fails" not in c
    ]
    session_id = json.loads(command.split("-d '", 1)[1].split("'", 1)[0])["session_id"]
    async with grpc.aio.insecure_channel(demo_target) as channel:
        detail = await pb_grpc.SessionMonitoringStub(channel).GetSessionDetail(
            pb.GetSessionDetailRequest(session_id=session_id), metadata=(("x-tenant-id", "demo"),)
        )
    assert detail.trace.retrieval, "a help-center chunk"
    assert [tool.status for tool in detail.trace.tools] == [pb.TOOL_CALL_STATUS_ERROR], "its lookup"
    assert detail.trace.errors, "the error it caused"


def readme_check_counts_commands() -> list[str]:
    """The lines of the check-counts block in docs/data-model.md."""
    section = DATA_MODEL.read_text().split("When triggers were bypassed", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


async def test_the_readme_check_counts_commands_report_and_repair_as_documented(
    private_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade_to_head, private_database_url)
    connection = await asyncpg.connect(asyncpg_dsn(private_database_url))
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(
            "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ('restored', 's')"
        )
    finally:
        await connection.close()
    every, one_tenant, repair = readme_check_counts_commands()
    expected = [(every, 1), (one_tenant, 0), (repair, 0), (every, 0)]
    for command, code in expected:
        runnable = command.replace(".venv/bin/python", sys.executable)
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            runnable,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "DATABASE_URL": private_database_url, "LOG_LEVEL": "WARNING"},
        )
        out, err = await process.communicate()
        assert process.returncode == code, (command, out.decode(), err.decode())
    assert out.decode() == "all tenants: exact\n"


def readme_watch_commands() -> list[str]:
    """The grpcurl lines of the README's 'Watching changes live' section."""
    section = README.read_text().split("## Watching changes live", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```sh")[1:]]
    return [line for block in blocks for line in block.splitlines() if "WatchSessions" in line]


async def _read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    """Read grpcurl's output up to the end of the first response (a JSON object closed at the
    line's start) that holds `needle`."""
    found = False
    async with asyncio.timeout(15):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"grpcurl ended before printing {needle}: {seen}"
            seen.append(line)
            found = found or needle in line
            if found and line == "}\n":
                return


@pytest.mark.parametrize("command", readme_watch_commands())
async def test_the_readme_watch_prints_a_change_as_it_happens(
    command: str, demo_target: str
) -> None:
    runnable = command.replace(".venv/bin/grpcurl", str(GRPCURL)).replace(
        "localhost:50051", demo_target
    )
    async with grpc.aio.insecure_channel(demo_target) as channel:
        stub = pb_grpc.SessionMonitoringStub(channel)
        metadata = [("x-tenant-id", "demo")]
        active = await stub.ListSessions(
            pb.ListSessionsRequest(status=pb.SESSION_STATUS_ACTIVE, page_size=1), metadata=metadata
        )
        session_id = active.sessions[0].session_id
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", runnable, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        seen: list[str] = []
        try:
            # Subscribed: its first bookmark (or, with send_initial, the end of the initial set).
            await _read_until(process.stdout, "WATCH_EVENT_TYPE_BOOKMARK", seen)
            for status in (pb.SESSION_STATUS_CLOSED, pb.SESSION_STATUS_ACTIVE):  # and back
                await stub.UpdateSessionStatus(
                    pb.UpdateSessionStatusRequest(session_id=session_id, status=status),
                    metadata=metadata,
                )
            expected = (
                "SESSION_REMOVED" if "SESSION_STATUS_ACTIVE" in command else "SESSION_UPDATED"
            )
            await _read_until(process.stdout, f"WATCH_EVENT_TYPE_{expected}", seen)
        finally:
            process.terminate()
            await process.wait()
    assert any(session_id in line for line in seen)
    if "send_initial" in command:
        assert any("WATCH_EVENT_TYPE_SESSION_ADDED" in line for line in seen)
        assert any('"initial_events_end": true' in line for line in seen), seen
