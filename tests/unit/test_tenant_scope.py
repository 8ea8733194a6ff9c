"""The tenancy check itself: statements it must pass and statements it must refuse."""

from __future__ import annotations

import pytest

from tests.tenant_scope import analyze, is_tenant_scoped, tenancy_problems

SCOPED = {
    "no tenant table": "SELECT 1",
    "qualified, cast parameter": (
        "SELECT * FROM chat_messages WHERE chat_messages.tenant_id = $1::VARCHAR"
    ),
    "unqualified, one table": "SELECT count(*) FROM chat_sessions WHERE tenant_id = $1",
    "parameter first, CAST syntax": (
        "SELECT * FROM chat_sessions AS s WHERE CAST($1 AS text) = s.tenant_id"
    ),
    "row equality": ("SELECT * FROM chat_sessions s WHERE (s.tenant_id, s.session_id) = ($1, $2)"),
    "IN of one parameter": "SELECT * FROM chat_sessions s WHERE s.tenant_id IN ($1)",
    "nested AND": (
        "SELECT * FROM chat_sessions s WHERE (s.session_id = $2 AND (s.tenant_id = $1)) "
        "AND s.channel_type = $3"
    ),
    "inner join, equality with the constrained side": (
        "SELECT * FROM chat_sessions s JOIN chat_messages m "
        "ON m.tenant_id = s.tenant_id AND m.session_id = s.session_id WHERE s.tenant_id = $1"
    ),
    "equality chain in any order": (
        "SELECT * FROM chat_messages m, chat_session_message_counts c, chat_sessions s "
        "WHERE m.tenant_id = c.tenant_id AND c.tenant_id = s.tenant_id AND s.tenant_id = $1"
    ),
    "left join, the ON filters the right side": (
        "SELECT * FROM chat_sessions s LEFT JOIN chat_messages m "
        "ON m.tenant_id = s.tenant_id WHERE s.tenant_id = $1"
    ),
    "correlated scalar subquery": (
        "SELECT s.session_id, (SELECT count(*) FROM chat_messages m "
        "WHERE m.tenant_id = s.tenant_id AND m.session_id = s.session_id) "
        "FROM chat_sessions s WHERE s.tenant_id = $1"
    ),
    "correlated EXISTS two levels down": (
        "SELECT * FROM chat_sessions s WHERE s.tenant_id = $1 AND EXISTS (SELECT 1 FROM "
        "chat_messages m WHERE m.tenant_id = s.tenant_id AND m.id IN (SELECT d.n FROM "
        "chat_message_count_deltas d WHERE d.tenant_id = m.tenant_id))"
    ),
    "constrained CTE joined by its tenant_id": (
        "WITH page AS (SELECT tenant_id, session_id FROM chat_sessions WHERE tenant_id = $1 "
        "LIMIT 10) SELECT * FROM page JOIN chat_messages m "
        "ON m.tenant_id = page.tenant_id AND m.session_id = page.session_id"
    ),
    "subquery in FROM, condition pushed into UNION ALL arms": (
        "SELECT b.day, sum(b.n) FROM (SELECT c.tenant_id, c.day, c.n FROM chat_session_counts c "
        "UNION ALL SELECT d.tenant_id, d.day, d.n FROM chat_session_count_deltas d) AS b "
        "WHERE b.tenant_id = $1 GROUP BY b.day"
    ),
    "subquery through subquery": (
        "SELECT * FROM (SELECT * FROM (SELECT * FROM chat_sessions) AS inner_rows) AS outer_rows "
        "WHERE outer_rows.tenant_id = $1"
    ),
    "UPDATE ... RETURNING": (
        "UPDATE chat_sessions SET metadata = $3 WHERE chat_sessions.tenant_id = $1 "
        "AND chat_sessions.session_id = $2 RETURNING chat_sessions.*"
    ),
    "data-modifying CTE read through a UNION ALL subquery": (
        "WITH updated AS (UPDATE chat_sessions SET updated_at = now() WHERE tenant_id = $1 "
        "AND session_id = $2 RETURNING chat_sessions.tenant_id, chat_sessions.session_id), "
        "already AS (SELECT s.tenant_id, s.session_id FROM chat_sessions s WHERE s.tenant_id = $1 "
        "AND s.session_id = $2 AND NOT EXISTS (SELECT * FROM updated) FOR SHARE) "
        "SELECT r.session_id, (SELECT n FROM chat_session_message_counts AS c "
        "WHERE c.tenant_id = r.tenant_id AND c.session_id = r.session_id) FROM ("
        "SELECT true AS changed, * FROM updated UNION ALL SELECT false, * FROM already) AS r"
    ),
    "locking a FROM item": ("SELECT * FROM chat_sessions s WHERE s.tenant_id = $1 FOR SHARE OF s"),
    "a bound tenant from VALUES": (
        "SELECT m.* FROM (VALUES ($1)) AS v(tenant_id) JOIN chat_messages m "
        "ON m.tenant_id = v.tenant_id"
    ),
    "DELETE": "DELETE FROM chat_messages WHERE tenant_id = $1 AND session_id = $2",
    "INSERT of a bound tenant": (
        "INSERT INTO chat_messages (tenant_id, session_id, content) VALUES ($1, $2, $3)"
    ),
    "INSERT ... ON CONFLICT on a key with tenant_id": (
        "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id, session_id) DO UPDATE SET updated_at = now()"
    ),
}

UNSCOPED = {
    "no condition": "SELECT count(*) FROM chat_sessions",
    "no tenant condition": "SELECT * FROM chat_sessions WHERE session_id = $1",
    "a literal": "SELECT * FROM chat_sessions s WHERE s.tenant_id = 'acme'",
    "IS NOT NULL": "SELECT * FROM chat_messages WHERE tenant_id IS NOT NULL",
    "an OR that weakens it": (
        "SELECT * FROM chat_sessions s WHERE s.tenant_id = $1 OR s.session_id = $2"
    ),
    "NOT": "SELECT * FROM chat_sessions s WHERE NOT (s.tenant_id = $1)",
    "another operator": "SELECT * FROM chat_sessions s WHERE s.tenant_id >= $1",
    "any of an array": "SELECT * FROM chat_sessions s WHERE s.tenant_id = ANY($1)",
    "a function of the column": "SELECT * FROM chat_sessions s WHERE lower(s.tenant_id) = $1",
    "a cast of the column": "SELECT * FROM chat_sessions s WHERE s.tenant_id::char(2) = $1",
    "equal to itself": "SELECT * FROM chat_sessions s WHERE s.tenant_id = s.tenant_id",
    "a join with only one side constrained": (
        "SELECT * FROM chat_sessions s JOIN chat_messages m ON m.session_id = s.session_id "
        "WHERE s.tenant_id = $1"
    ),
    "a left join's ON does not filter its left side": (
        "SELECT * FROM chat_messages m LEFT JOIN chat_sessions s "
        "ON s.tenant_id = $1 AND m.tenant_id = s.tenant_id"
    ),
    "a full join's ON filters neither side": (
        "SELECT * FROM chat_sessions s FULL JOIN chat_messages m "
        "ON s.tenant_id = $1 AND m.tenant_id = $1"
    ),
    "two unconstrained sides equal to each other": (
        "SELECT * FROM chat_sessions s JOIN chat_messages m ON m.tenant_id = s.tenant_id"
    ),
    "an ambiguous unqualified column": (
        "SELECT * FROM chat_sessions s, chat_messages m WHERE tenant_id = $1"
    ),
    "a correlated subquery under an unconstrained outer row": (
        "SELECT (SELECT count(*) FROM chat_messages m WHERE m.tenant_id = s.tenant_id) "
        "FROM chat_sessions s WHERE s.session_id = $1"
    ),
    "an unconstrained scalar subquery": (
        "SELECT s.*, (SELECT count(*) FROM chat_messages) FROM chat_sessions s "
        "WHERE s.tenant_id = $1"
    ),
    "an unconstrained EXISTS": (
        "SELECT * FROM chat_sessions s WHERE s.tenant_id = $1 AND EXISTS "
        "(SELECT 1 FROM chat_messages m WHERE m.session_id = s.session_id)"
    ),
    "a CTE reading an unconstrained table": (
        "WITH totals AS (SELECT count(*) AS n FROM chat_sessions) "
        "SELECT s.*, totals.n FROM chat_sessions s, totals WHERE s.tenant_id = $1"
    ),
    "a CTE filtered only outside": (
        "WITH everything AS (SELECT * FROM chat_sessions) "
        "SELECT * FROM everything WHERE everything.tenant_id = $1"
    ),
    "a CTE whose tenant_id comes from elsewhere": (
        "WITH page AS (SELECT s.session_id AS tenant_id FROM chat_sessions s "
        "WHERE s.tenant_id = $1) SELECT * FROM page JOIN chat_messages m "
        "ON m.tenant_id = page.tenant_id"
    ),
    "a subquery with LIMIT filtered outside": (
        "SELECT * FROM (SELECT * FROM chat_sessions LIMIT 10) AS s WHERE s.tenant_id = $1"
    ),
    "a subquery with a window over all tenants": (
        "SELECT * FROM (SELECT tenant_id, count(*) OVER () AS everyone FROM chat_sessions) AS c "
        "WHERE c.tenant_id = $1"
    ),
    "one UNION ALL arm unconstrained": (
        "SELECT session_id FROM chat_sessions WHERE tenant_id = $1 "
        "UNION ALL SELECT session_id FROM chat_messages"
    ),
    "a UNION ALL subquery with one arm's column not the tenant id": (
        "SELECT * FROM (SELECT c.tenant_id, c.n FROM chat_session_counts c "
        "UNION ALL SELECT d.status, d.n FROM chat_session_count_deltas d) AS b "
        "WHERE b.tenant_id = $1"
    ),
    "a LATERAL subquery": (
        "SELECT * FROM chat_sessions s, LATERAL (SELECT * FROM chat_messages m "
        "WHERE m.session_id = s.session_id) AS m WHERE s.tenant_id = $1"
    ),
    "column aliases on the table": (
        "SELECT * FROM chat_sessions AS s(session_id, tenant_id) WHERE s.tenant_id = $1"
    ),
    "schema-qualified": "SELECT * FROM public.chat_session_counts",
    "quoted name": 'SELECT * FROM "chat_message_count_deltas"',
    "UPDATE without a tenant condition": (
        "UPDATE chat_sessions SET metadata = $2 WHERE session_id = $1"
    ),
    "UPDATE ... FROM another tenant table": (
        "UPDATE chat_sessions s SET metadata = m.metadata FROM chat_messages m "
        "WHERE s.tenant_id = $1 AND m.session_id = s.session_id"
    ),
    "DELETE without a tenant condition": "DELETE FROM chat_messages WHERE id = $1",
    "INSERT of a literal tenant": (
        "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ('acme', $1)"
    ),
    "INSERT ... SELECT of every tenant": (
        "INSERT INTO chat_session_counts (tenant_id, day, n) "
        "SELECT tenant_id, current_date, count(*) FROM chat_sessions GROUP BY tenant_id"
    ),
    "INSERT ... ON CONFLICT on another key": (
        "INSERT INTO chat_sessions (tenant_id, session_id) VALUES ($1, $2) "
        "ON CONFLICT (session_id) DO UPDATE SET updated_at = now()"
    ),
    "a statement the check does not know": "TRUNCATE chat_sessions",
    "MERGE": (
        "MERGE INTO chat_sessions s USING chat_messages m ON s.session_id = m.session_id "
        "WHEN MATCHED THEN DELETE"
    ),
    "not SQL": "SELECT FROM WHERE chat_sessions",
}


@pytest.mark.parametrize("sql", SCOPED.values(), ids=SCOPED.keys())
def test_a_statement_constrained_by_a_bound_tenant_passes(sql: str) -> None:
    assert analyze(sql).problems == ()


@pytest.mark.parametrize("sql", UNSCOPED.values(), ids=UNSCOPED.keys())
def test_a_statement_not_constrained_by_a_bound_tenant_fails(sql: str) -> None:
    assert not is_tenant_scoped(sql)


def test_a_problem_names_the_reference() -> None:
    problems = analyze(
        "SELECT * FROM chat_sessions s JOIN chat_messages m ON m.session_id = s.session_id "
        "WHERE s.tenant_id = $1"
    ).problems
    assert problems == ("chat_messages AS m: not constrained by a bound tenant_id",)


@pytest.mark.parametrize(
    ("sql", "parameters"),
    [
        (
            "SELECT * FROM chat_sessions s WHERE s.session_id = $1 AND s.tenant_id = $2 "
            "AND s.channel_type = $3",
            {2},
        ),
        ("INSERT INTO chat_messages (session_id, tenant_id, content) VALUES ($1, $2, $3)", {2}),
        (
            "SELECT m.* FROM (VALUES ($1, $2)) AS v(session_id, tenant_id) JOIN chat_messages m "
            "ON m.tenant_id = v.tenant_id AND m.session_id = v.session_id",
            {2},
        ),
    ],
)
def test_the_constraining_parameters_are_the_ones_compared_with_the_callers_tenant(
    sql: str, parameters: set[int]
) -> None:
    assert analyze(sql).tenant_parameters == parameters
    assert tenancy_problems(sql, ["s-1", "acme", "web"], "acme") == []
    assert tenancy_problems(sql, ["acme", "s-1", "web"], "acme") != []


def test_a_constraining_parameter_bound_to_another_tenant_fails() -> None:
    # SQLAlchemy renders literals as parameters too, so the bound value is what counts.
    sql = "SELECT * FROM chat_sessions WHERE tenant_id = $1"
    assert tenancy_problems(sql, ["globex"], "acme") == [
        "$1 is bound to 'globex', not the caller's 'acme'"
    ]


def test_a_tenant_statement_outside_any_call_fails() -> None:
    sql = "SELECT * FROM chat_sessions WHERE tenant_id = $1"
    assert tenancy_problems(sql, ["acme"], None) != []
    assert tenancy_problems("SELECT 1", [], None) == []
