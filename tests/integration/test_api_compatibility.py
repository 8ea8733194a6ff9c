"""The proto is a contract with other teams: `make lint` runs `buf breaking` against the last
released API (protos/released/, see the Makefile's API_RELEASE), and a breaking edit fails it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"
PROTO = Path("protos/sessionmonitoring/v1/session_monitoring.proto")


def _released_api() -> Path:
    makefile = (REPO_ROOT / "Makefile").read_text()
    found = re.search(r"^API_RELEASE := (\S+)$", makefile, re.MULTILINE)
    assert found, "the Makefile names the released API"
    return REPO_ROOT / found.group(1)


def _breaking(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--error-format", "json", "--against", str(_released_api())],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def api_copy(tmp_path: Path) -> Path:
    """The module as it stands (buf.yaml and protos/), to edit."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    return tmp_path


def test_the_api_as_it_stands_is_compatible_with_the_last_release() -> None:
    result = _breaking(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("before", "after", "rule"),
    [
        ("int64 total = 3;", "int32 total = 3;", "FIELD_SAME_TYPE"),
        ("string session_id = 1;", "string session_id = 11;", "FIELD_NO_DELETE"),
        ("rpc ListSessions(", "rpc ListAllSessions(", "RPC_NO_DELETE"),
    ],
)
def test_a_breaking_edit_fails_the_check(
    api_copy: Path, before: str, after: str, rule: str
) -> None:
    proto = api_copy / PROTO
    text = proto.read_text()
    assert before in text
    proto.write_text(text.replace(before, after, 1))
    result = _breaking(api_copy)
    assert result.returncode != 0
    assert rule in result.stdout + result.stderr


def test_an_added_field_is_compatible(api_copy: Path) -> None:
    proto = api_copy / PROTO
    text = proto.read_text()
    anchor = "message Pagination {"
    assert anchor in text
    added = anchor + "\n  // An added field.\n  int32 added = 99;"
    proto.write_text(text.replace(anchor, added, 1))
    result = _breaking(api_copy)
    assert result.returncode == 0, result.stdout + result.stderr
