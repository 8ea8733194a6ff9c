"""Core statements compile once to asyncpg's `$n` form, and calls bind values by name."""

from __future__ import annotations

from sqlalchemy import BindParameter, Integer, bindparam, func, select

from server.data.schema import sessions_table
from server.data.statements import compile_statement

_s = sessions_table.c


def test_named_values_become_positional_arguments_in_placeholder_order() -> None:
    statement = compile_statement(
        select(_s.session_id)
        .where(_s.tenant_id == bindparam("tenant_id"), _s.session_id > bindparam("after"))
        .limit(bindparam("limit", type_=Integer))
    )
    assert "tenant_id = $1::VARCHAR" in statement.sql
    assert "LIMIT $3::INTEGER" in statement.sql
    assert statement.arguments({"limit": 5, "after": "s-1", "tenant_id": "t"}) == ["t", "s-1", 5]


def test_literals_inside_the_statement_are_bound_from_the_statement_itself() -> None:
    statement = compile_statement(
        select(func.coalesce(func.max(_s.session_id), "none")).where(
            _s.tenant_id == bindparam("tenant_id")
        )
    )
    assert statement.arguments({"tenant_id": "t"}) == ["none", "t"]


def test_a_name_used_twice_is_bound_twice_with_one_value() -> None:
    tenant: BindParameter[str] = bindparam("tenant_id")
    statement = compile_statement(
        select(_s.session_id)
        .where(_s.tenant_id == tenant)
        .union_all(select(_s.session_id).where(_s.tenant_id == tenant))
    )
    assert statement.arguments({"tenant_id": "t"}) == ["t"] * len(statement.names)
    assert len(statement.names) >= 1
