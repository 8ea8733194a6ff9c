"""The isolation guarantee is mechanical: every statement the server issues is tenant-scoped,
checked as it is issued (tests/tenant_scope.py; the checker's own cases are in
tests/unit/test_tenant_scope.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc
from sqlalchemy import bindparam, func, select

from server.data.schema import sessions_table
from server.data.statements import ObservedDatabase, compile_statement
from server.transport.tenancy import bind_tenant, unbind_tenant
from tests.factories import Factory, tenant_metadata
from tests.helpers import TenancyCheck
from tests.tenant_scope import is_tenant_scoped

REPO_ROOT = Path(__file__).resolve().parents[2]
_s = sessions_table.c


async def test_every_statement_of_every_rpc_filters_by_a_bound_tenant_id(
    stub: pb_grpc.SessionMonitoringStub,
    factory: Factory,
    tenant: str,
    issued_statements: list[str],
) -> None:
    await factory.session(tenant, "s-1")
    await factory.message(tenant, "s-1")
    before = len(issued_statements)
    metadata = tenant_metadata(tenant)
    await stub.ListSessions(pb.ListSessionsRequest(page=2, page_size=1), metadata=metadata)
    await stub.GetSessionDetail(pb.GetSessionDetailRequest(session_id="s-1"), metadata=metadata)
    await stub.UpdateSessionStatus(
        pb.UpdateSessionStatusRequest(session_id="s-1", status=pb.SESSION_STATUS_CLOSED),
        metadata=metadata,
    )
    issued = issued_statements[before:]
    # Each RPC's statements reached the observer, and reading counters and updating were seen.
    assert len(issued) >= 3
    assert any("chat_session_counts" in s for s in issued)
    assert any("UPDATE chat_sessions" in s for s in issued)
    assert all(is_tenant_scoped(s) for s in issued)


async def test_the_check_judges_each_statement_as_it_runs_against_the_calls_tenant(
    database_url: str, tenant: str
) -> None:
    check = TenancyCheck()
    database = ObservedDatabase(database_url, pool_size=1, pool_timeout=5, connect_timeout=5)
    database.observers.append(check)
    count = select(func.count()).select_from(sessions_table)
    await database.open()
    token = bind_tenant(tenant)
    try:
        scoped = count.where(_s.tenant_id == bindparam("tenant_id"))
        await database.fetch(compile_statement(scoped), {"tenant_id": tenant})
        assert check.violations == []

        await database.fetch(compile_statement(count.where(_s.session_id == "s-1")), {})
        assert len(check.violations) == 1
        assert check.violations[0].problems == (
            "chat_sessions: not constrained by a bound tenant_id",
        )

        # SQLAlchemy binds a literal as a parameter: the value it is bound to gives it away.
        literal = count.where(_s.tenant_id == "someone-else")
        await database.fetch(compile_statement(literal), {})
        assert len(check.violations) == 2
        assert "not the caller's" in check.violations[1].problems[0]
    finally:
        unbind_tenant(token)
        await database.close()


_CONFTEST = """
from tests.conftest import pytest_runtest_call, pytest_runtest_setup, pytest_runtest_teardown
"""
_TESTS = """
import pytest

from tests.helpers import TENANCY


@pytest.fixture
def issues_one_in_teardown():
    yield
    TENANCY.statement("DELETE FROM chat_messages", [])


def test_issuing_an_unscoped_statement():
    TENANCY.statement("SELECT * FROM chat_sessions WHERE session_id = $1", ["s-1"])


def test_issuing_a_scoped_statement():
    TENANCY.statement("SELECT 1", [])


def test_issuing_one_while_the_test_fails_too():
    TENANCY.statement("SELECT * FROM chat_messages", [])
    assert 1 == 2


def test_before_a_teardown_that_issues_one(issues_one_in_teardown):
    pass
"""


def test_a_test_that_issues_an_unscoped_statement_fails_and_the_others_do_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    (tmp_path / "test_issuing.py").write_text(_TESTS)
    generated = str(REPO_ROOT / "generated")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO_ROOT), generated))},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run.stdout
    assert "2 failed, 2 passed, 1 error" in out, out
    assert "FAILED test_issuing.py::test_issuing_an_unscoped_statement" in out, out
    assert "PASSED test_issuing.py::test_issuing_a_scoped_statement" in out, out
    assert "FAILED test_issuing.py::test_issuing_one_while_the_test_fails_too" in out, out
    assert "ERROR test_issuing.py::test_before_a_teardown_that_issues_one" in out, out
    assert "chat_sessions: not constrained by a bound tenant_id" in out, out
    assert "not tenant-scoped during teardown" in out, out
