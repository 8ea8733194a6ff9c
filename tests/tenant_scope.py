"""The tenancy check on the statements the server issues: every reference to a chat or counter
table is constrained by the caller's tenant id, bound as a parameter.

Statements are parsed by pglast (PostgreSQL's own parser, libpg_query), so the check follows the
grammar, not the text. A reference to one of TENANT_TABLES is constrained when a condition that
holds for every row it contributes says so:

- `ref.tenant_id = $n` (a cast on the parameter is fine), as a top-level AND conjunct of the
  WHERE of the reference's own level, or of the ON of a join that filters its side (an inner
  join's ON filters both sides, a LEFT JOIN's the right one, a RIGHT JOIN's the left one, a FULL
  JOIN's neither);
- `ref.tenant_id = other.tenant_id` placed the same way, where `other` is constrained: a reference
  of the same level or of an enclosing one (a correlated subquery), or a subquery or CTE whose
  tenant_id column holds, in every row, the tenant id of constrained references;
- a subquery in FROM constrained that way hands the condition down to the reference its
  tenant_id column comes from, as PostgreSQL's planner pushes it down, when the subquery keeps
  one row per row it reads (no function call in its select list, no GROUP BY, HAVING, DISTINCT,
  window, LIMIT/OFFSET or locking; UNION ALL arms). A CTE never is: its body must be constrained
  on its own;
- an INSERT's target, when every row it writes has a constrained tenant_id (a bound parameter
  or a constrained column), and an ON CONFLICT DO UPDATE's arbiter includes tenant_id.

Anything else leaves a reference unconstrained: OR, NOT, IS NOT NULL, literals, `= ANY($n)`, a
function or cast on the column, column aliases on the table (`t AS s(a, b)`), and any construct
the checker does not know (a reference it never judged is reported as such). Each `$n` that
constrains a reference must also be bound to the caller's tenant (`tenancy_problems`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

TENANT_TABLES = frozenset(
    {
        "chat_sessions",
        "chat_messages",
        "chat_session_counts",
        "chat_session_count_deltas",
        "chat_session_message_counts",
        "chat_message_count_deltas",
        "chat_session_changes",
    }
)
_TENANT_ID = "tenant_id"


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the check found in one statement's text."""

    problems: tuple[str, ...]
    tenant_parameters: frozenset[int]  # the `$n` that constrain references: must be the caller's


@lru_cache(maxsize=4096)  # statements are compiled once per shape, so few distinct texts
def analyze(sql: str) -> Analysis:
    """The references to TENANT_TABLES in `sql` that are not constrained (see the module doc)."""
    try:
        statements = parse_sql(sql)
    except ParseError as error:
        return Analysis((f"cannot be parsed: {error}",), frozenset())
    checker = _Checker()
    problems: list[str] = []
    for raw in statements:
        if raw.stmt is not None:
            checker.statement(raw.stmt, None, problems)
    # Whatever the analysis above does not understand, it never judges: report it, never pass it.
    for node in _walk(statements):
        if (
            isinstance(node, ast.RangeVar)
            and node.relname in TENANT_TABLES
            and id(node) not in checker.judged
        ):
            problems.append(f"{node.relname}: referenced where the check cannot follow it")
    return Analysis(tuple(dict.fromkeys(problems)), frozenset(checker.parameters))


def tenancy_problems(sql: str, arguments: Sequence[Any], tenant: str | None) -> list[str]:
    """Why a statement issued for `tenant` (None: outside any call) with `arguments` is not
    tenant-scoped; empty when it is."""
    analysis = analyze(sql)
    problems = list(analysis.problems)
    for number in sorted(analysis.tenant_parameters):
        value = arguments[number - 1] if number <= len(arguments) else None
        if tenant is None:
            problems.append(f"${number} constrains tenant_id outside any call's tenant")
        elif value != tenant:
            problems.append(f"${number} is bound to {value!r}, not the caller's {tenant!r}")
    return problems


def is_tenant_scoped(sql: str) -> bool:
    """Whether every reference to a tenant table in `sql` is constrained by a bound tenant id."""
    return not analyze(sql).problems


# --- What a query produces, as the query around it sees it -------------------------------------


@dataclass(frozen=True, slots=True)
class _Tenant:
    """A column that holds a tenant id."""

    constrained: bool
    # The FROM item of the producing level it is read from (for pushing a condition down).
    source: str | None
    # The parameters it is bound from, if any: they constrain whatever it is found equal to.
    parameters: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class _Column:
    name: str | None
    star_of: str | None = None  # a tenant table's `*`: stands for all its columns
    tenant: _Tenant | None = None  # what it holds when a tenant id (for a `*`: its tenant_id)
    opaque: bool = False  # columns we cannot see, maybe one called tenant_id

    @property
    def provides_tenant_id(self) -> bool:
        return self.star_of is not None or self.name == _TENANT_ID


_OPAQUE = _Column(None, opaque=True)


@dataclass(frozen=True, slots=True)
class _Rows:
    columns: tuple[_Column, ...]
    # One row out per row read, so a condition on the output can be pushed down to the input.
    one_per_row: bool

    @property
    def tenant_index(self) -> int | None:
        """The position of the column an outer `alias.tenant_id` names, when unambiguous."""
        found = [i for i, column in enumerate(self.columns) if column.provides_tenant_id]
        if len(found) != 1 or any(column.opaque for column in self.columns):
            return None
        return found[0]

    @property
    def tenant(self) -> _Tenant | None:
        index = self.tenant_index
        return None if index is None else self.columns[index].tenant

    @property
    def constrained(self) -> bool:
        tenant = self.tenant
        return tenant is not None and tenant.constrained

    @property
    def pushable(self) -> bool:
        tenant = self.tenant
        return self.one_per_row and tenant is not None and tenant.source is not None


_UNKNOWN_ROWS = _Rows((_OPAQUE,), one_per_row=False)


@dataclass(slots=True)
class _Item:
    """A FROM item (or UPDATE/DELETE/INSERT target) of one query level."""

    name: str
    table: str | None = None  # a base table's name
    renamed: bool = False  # `table AS s(a, b)`: its column names are not the table's
    rows: _Rows | None = None  # a subquery's or CTE's output
    subquery: ast.Node | None = None  # a non-lateral subquery in FROM (pushdown target)
    problems: list[str] = field(default_factory=list)  # its subquery's
    opaque: bool = False  # a function or other item whose columns we cannot see

    @property
    def has_tenant_id(self) -> bool:
        if self.table is not None:
            return self.table in TENANT_TABLES and not self.renamed
        return self.rows is not None and self.rows.tenant_index is not None

    @property
    def may_have_tenant_id(self) -> bool:
        if self.table is not None:
            return True  # another table may well have one
        if self.rows is not None:
            return self.has_tenant_id or any(column.opaque for column in self.rows.columns)
        return True

    def describe(self) -> str:
        if self.table is None or self.table == self.name:
            return self.name
        return f"{self.table} AS {self.name}"


class _Level:
    """One query level: its FROM items, which are constrained, the CTEs it sees, its parent."""

    def __init__(self, parent: _Level | None) -> None:
        self.parent = parent
        self.items: dict[str, _Item] = {}
        self.constrained: set[str] = set()
        self.ctes: dict[str, _Rows] = {}

    def chain(self) -> Iterator[_Level]:
        level: _Level | None = self
        while level is not None:
            yield level
            level = level.parent

    def cte(self, name: str) -> _Rows | None:
        for level in self.chain():
            if name in level.ctes:
                return level.ctes[name]
        return None


# --- The analysis ------------------------------------------------------------------------------

# A condition group: the quals, and the names of the items whose rows they filter.
_Group = tuple[ast.Node | None, set[str]]


class _Checker:
    def __init__(self) -> None:
        self.parameters: set[int] = set()
        self.judged: set[int] = set()  # ids of the RangeVar nodes given a verdict
        self._anonymous = 0

    def statement(self, node: ast.Node, parent: _Level | None, problems: list[str]) -> _Rows:
        if isinstance(node, ast.SelectStmt):
            return self.query(node, parent, problems, push=None)
        if isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
            return self.update_or_delete(node, parent, problems)
        if isinstance(node, ast.InsertStmt):
            return self.insert(node, parent, problems)
        return _UNKNOWN_ROWS  # its tenant-table references stay unjudged, so get reported

    def ctes(
        self, clause: ast.WithClause | None, parent: _Level | None, problems: list[str]
    ) -> _Level | None:
        """The scope a statement's WITH adds: each CTE sees the ones before it."""
        if clause is None:
            return parent
        frame = _Level(parent)
        for cte in clause.ctes or ():
            if not isinstance(cte, ast.CommonTableExpr) or cte.ctename is None:
                continue
            # A CTE is constrained in its own body or not at all: nothing is pushed into it.
            body = cte.ctequery
            rows = self.statement(body, frame, problems) if body is not None else _UNKNOWN_ROWS
            frame.ctes[cte.ctename] = _renamed(rows, cte.aliascolnames)
        return frame

    def query(
        self, node: ast.SelectStmt, parent: _Level | None, problems: list[str], push: int | None
    ) -> _Rows:
        """A SELECT, or a set operation of them. `push`: the position of the output column a
        tenant condition from outside is pushed down to."""
        scope = self.ctes(node.withClause, parent, problems)
        if node.op == enums.SetOperation.SETOP_NONE:
            return self.select(node, scope, problems, push)
        if not isinstance(node.larg, ast.SelectStmt) or not isinstance(node.rarg, ast.SelectStmt):
            return _UNKNOWN_ROWS  # the arms' references stay unjudged, so get reported
        left = self.query(node.larg, scope, problems, push)
        right = self.query(node.rarg, scope, problems, push)
        # The planner pushes conditions into UNION ALL arms; other set operations are not kept.
        union_all = node.op == enums.SetOperation.SETOP_UNION and bool(node.all)
        one_per_row = union_all and _unlimited(node) and left.one_per_row and right.one_per_row
        return _Rows(_aligned(left.columns, right.columns), one_per_row)

    def select(
        self, node: ast.SelectStmt, scope: _Level | None, problems: list[str], push: int | None
    ) -> _Rows:
        level = _Level(scope)
        groups: list[_Group] = []
        for item in node.fromClause or ():
            self.from_item(item, level, groups)
        groups.insert(0, (node.whereClause, set(level.items)))
        for locking in node.lockingClause or ():  # `FOR SHARE OF s` names a FROM item
            self.judged.update(id(rel) for rel in getattr(locking, "lockedRels", None) or ())
        if node.valuesLists:
            return _Rows(self.values(node.valuesLists, level, problems), one_per_row=False)
        pushed: set[str] = set()
        if push is not None and _one_per_row(node):
            # Positions and sources only: nothing is constrained yet.
            columns = self.columns(node.targetList, level)
            tenant = columns[push].tenant if push < len(columns) else None
            if tenant is not None and tenant.source is not None:
                pushed.add(tenant.source)
        restricted = self.constrain(level, groups, pushed)
        self.finish(level, restricted, problems, node, skip={"withClause", "larg", "rarg"})
        return _Rows(tuple(self.columns(node.targetList, level)), _one_per_row(node))

    def update_or_delete(
        self, node: ast.UpdateStmt | ast.DeleteStmt, parent: _Level | None, problems: list[str]
    ) -> _Rows:
        scope = self.ctes(node.withClause, parent, problems)
        level = _Level(scope)
        groups: list[_Group] = []
        if node.relation is not None:
            self.from_item(node.relation, level, groups)
        others = node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause
        for item in others or ():
            self.from_item(item, level, groups)
        groups.insert(0, (node.whereClause, set(level.items)))
        restricted = self.constrain(level, groups, set())
        self.finish(level, restricted, problems, node, skip={"withClause"})
        return _Rows(tuple(self.returning(node.returningClause, level)), one_per_row=False)

    def insert(self, node: ast.InsertStmt, parent: _Level | None, problems: list[str]) -> _Rows:
        scope = self.ctes(node.withClause, parent, problems)
        level = _Level(scope)
        relation = node.relation
        if relation is None or relation.relname is None:
            return _UNKNOWN_ROWS
        self.judged.add(id(relation))
        name = relation.alias.aliasname if relation.alias and relation.alias.aliasname else None
        target = _Item(name or relation.relname, table=relation.relname)
        level.items[target.name] = target
        if self.inserts_one_tenant(node, scope, problems):
            level.constrained.add(target.name)
        # ON CONFLICT may also read `excluded`, the row proposed for insertion.
        level.items["excluded"] = _Item("excluded", opaque=True)
        self.finish(level, set(), problems, node, skip={"withClause", "selectStmt", "relation"})
        return _Rows(tuple(self.returning(node.returningClause, level)), one_per_row=False)

    def inserts_one_tenant(
        self, node: ast.InsertStmt, scope: _Level | None, problems: list[str]
    ) -> bool:
        """Whether every row the INSERT writes or updates carries a constrained tenant id."""
        source = node.selectStmt
        if not isinstance(source, ast.SelectStmt):
            return False  # DEFAULT VALUES
        columns = self.query(source, scope, problems, push=None).columns
        names = [column.name for column in node.cols or () if isinstance(column, ast.ResTarget)]
        if names.count(_TENANT_ID) != 1:
            return False
        index = names.index(_TENANT_ID)
        # Positions behind a `*` or an opaque column are unknown.
        if index >= len(columns) or any(c.opaque or c.star_of for c in columns[: index + 1]):
            return False
        tenant = columns[index].tenant
        if tenant is None or not tenant.constrained:
            return False
        self.parameters.update(tenant.parameters)
        conflict = node.onConflictClause
        if conflict is not None and conflict.action == enums.OnConflictAction.ONCONFLICT_UPDATE:
            # The row updated is the one conflicting on the arbiter's columns: tenant_id among
            # them keeps it the same tenant's.
            infer = conflict.infer
            arbiters = [e.name for e in (infer.indexElems if infer else None) or ()]
            return _TENANT_ID in arbiters
        return True

    def values(
        self, rows: tuple[Any, ...], level: _Level, problems: list[str]
    ) -> tuple[_Column, ...]:
        """VALUES rows: a column is a constrained tenant id when every row binds a parameter."""
        for row in rows:
            for sub in _subqueries(row):
                self.statement(sub, level, problems)
        width = min(len(row) for row in rows)
        columns = []
        for index in range(width):
            numbers = {_parameter(row[index]) for row in rows}
            tenant = None
            if None not in numbers:
                tenant = _Tenant(True, None, frozenset(n for n in numbers if n is not None))
            columns.append(_Column(f"column{index + 1}", tenant=tenant))
        return tuple(columns)

    def from_item(self, node: Any, level: _Level, groups: list[_Group]) -> set[str]:
        """Add a FROM item (or join tree) to `level`; the names it added."""
        if isinstance(node, ast.RangeVar):
            return {self.range_var(node, level)}
        if isinstance(node, ast.RangeTableSample) and isinstance(node.relation, ast.RangeVar):
            return {self.range_var(node.relation, level)}
        if isinstance(node, ast.RangeSubselect):
            name = self.alias(node.alias, "subquery")
            item = _Item(name)
            if node.lateral:
                item.opaque = True  # analysed once this level's constraints are known
            elif node.subquery is not None:
                item.subquery = node.subquery
                item.rows = _renamed(
                    self.statement(node.subquery, level.parent, item.problems),
                    node.alias.colnames if node.alias else None,
                )
            level.items[name] = item
            return {name}
        if isinstance(node, ast.JoinExpr):
            left = self.from_item(node.larg, level, groups)
            right = self.from_item(node.rarg, level, groups)
            # Which sides' rows the ON filters: the preserved side of an outer join keeps all.
            filtered: set[str] = set()  # FULL: neither side
            if node.jointype == enums.JoinType.JOIN_INNER:
                filtered = left | right
            elif node.jointype == enums.JoinType.JOIN_LEFT:
                filtered = right
            elif node.jointype == enums.JoinType.JOIN_RIGHT:
                filtered = left
            groups.append((node.quals, filtered))
            return left | right
        name = self.alias(getattr(node, "alias", None), "item")
        level.items[name] = _Item(name, opaque=True)  # a function, JSON_TABLE, ...
        return {name}

    def range_var(self, node: ast.RangeVar, level: _Level) -> str:
        self.judged.add(id(node))
        relname = node.relname or ""
        name = node.alias.aliasname if node.alias and node.alias.aliasname else relname
        cte = level.cte(relname) if node.schemaname is None else None
        colnames = node.alias.colnames if node.alias is not None else None
        if cte is not None:
            level.items[name] = _Item(name, rows=_renamed(cte, colnames))
        else:
            level.items[name] = _Item(name, table=relname, renamed=bool(colnames))
        return name

    def alias(self, alias: ast.Alias | None, kind: str) -> str:
        if alias is not None and alias.aliasname:
            return alias.aliasname
        self._anonymous += 1
        return f"<{kind} {self._anonymous}>"

    def constrain(self, level: _Level, groups: list[_Group], pushed: set[str]) -> set[str]:
        """Mark the level's constrained items; return those constrained by a condition (which
        a subquery item then takes inside)."""
        level.constrained = set(pushed)
        level.constrained.update(
            name for name, item in level.items.items() if item.rows and item.rows.constrained
        )
        restricted = set(pushed)
        pairs = [
            (left, right, filtered)
            for quals, filtered in groups
            for conjunct in _conjuncts(quals)
            for left, right in _equalities(conjunct)
        ]
        changed = True
        while changed:  # until no equality constrains one more item
            changed = False
            for left, right, filtered in pairs:
                for column, other in ((left, right), (right, left)):
                    target = self.tenant_item(column, level)
                    if target is None or target[0] is not level or target[1] not in filtered:
                        continue
                    number = _parameter(other)
                    if number is not None:
                        self.parameters.add(number)
                    else:
                        source = self.tenant_item(other, level)
                        if source is None or source == target:
                            continue
                        if source[1] not in source[0].constrained:
                            continue
                        rows = source[0].items[source[1]].rows
                        if rows is not None and rows.tenant is not None:
                            self.parameters.update(rows.tenant.parameters)
                    restricted.add(target[1])
                    if target[1] not in level.constrained:
                        level.constrained.add(target[1])
                        changed = True
        return restricted

    def finish(
        self,
        level: _Level,
        restricted: set[str],
        problems: list[str],
        node: ast.Node,
        skip: set[str],
    ) -> None:
        """Push conditions into subqueries, check what the level's expressions contain, and give
        each tenant-table item its verdict."""
        for item in level.items.values():
            rows, subquery = item.rows, item.subquery
            if (
                item.problems
                and item.name in restricted
                and rows is not None
                and rows.pushable
                and isinstance(subquery, ast.SelectStmt)
            ):
                item.problems = []
                self.query(subquery, level.parent, item.problems, push=rows.tenant_index)
            problems.extend(item.problems)
        for attr in node:
            if attr not in skip:
                for sub in _subqueries(getattr(node, attr), lateral=True):
                    self.statement(sub, level, problems)
        for item in level.items.values():
            if item.table not in TENANT_TABLES:
                continue
            if item.renamed:
                problems.append(f"{item.describe()}: column aliases hide its tenant_id")
            elif item.name not in level.constrained:
                problems.append(f"{item.describe()}: not constrained by a bound tenant_id")

    def tenant_item(self, node: Any, level: _Level) -> tuple[_Level, str] | None:
        """The item (and its level) whose real tenant_id column `node` is, if it is one."""
        if not isinstance(node, ast.ColumnRef) or not node.fields:
            return None
        if not all(isinstance(part, ast.String) for part in node.fields):
            return None
        names = [part.sval for part in node.fields]
        if names[-1] != _TENANT_ID:
            return None
        if len(names) == 2:
            for scope in level.chain():
                if names[0] in scope.items:
                    found = scope.items[names[0]]
                    return (scope, found.name) if found.has_tenant_id else None
            return None
        if len(names) == 1:  # unqualified: the one item of the innermost level that has it
            for scope in level.chain():
                maybe = [item for item in scope.items.values() if item.may_have_tenant_id]
                if not maybe:
                    continue
                if len(maybe) == 1 and maybe[0].has_tenant_id:
                    return scope, maybe[0].name
                return None
        return None

    def columns(self, targets: tuple[Any, ...] | None, level: _Level) -> list[_Column]:
        columns: list[_Column] = []
        for target in targets or ():
            if not isinstance(target, ast.ResTarget):
                columns.append(_OPAQUE)
                continue
            value = target.val
            fields = (value.fields or ()) if isinstance(value, ast.ColumnRef) else ()
            if fields and isinstance(fields[-1], ast.A_Star):
                columns.extend(self.star(fields, level))
                continue
            name = target.name
            if name is None and fields:
                name = fields[-1].sval if isinstance(fields[-1], ast.String) else None
            columns.append(_Column(name, tenant=self.tenant_value(value, level)))
        return columns

    def returning(self, clause: ast.ReturningClause | None, level: _Level) -> list[_Column]:
        return self.columns(clause.exprs if clause is not None else None, level)

    def star(self, fields: tuple[Any, ...], level: _Level) -> list[_Column]:
        """`*` or `name.*` at `level`."""
        qualifier = [
            part.sval for part in fields[:-1] if isinstance(part, ast.String) and part.sval
        ]
        if len(qualifier) != len(fields) - 1 or len(qualifier) > 1:
            return [_OPAQUE]
        if qualifier and qualifier[0] not in level.items:
            return [_OPAQUE]
        names: list[str] = qualifier or list(level.items)
        return [column for name in names for column in self.expand(name, level)]

    def expand(self, name: str, level: _Level) -> list[_Column]:
        """`name.*` at `level`."""
        item = level.items[name]
        constrained = name in level.constrained
        if item.rows is not None:
            index = item.rows.tenant_index
            columns = []
            for position, column in enumerate(item.rows.columns):
                if column.tenant is not None:
                    is_id = position == index
                    column = replace(
                        column,
                        tenant=_Tenant(
                            column.tenant.constrained or (is_id and constrained),
                            name if is_id else None,
                            column.tenant.parameters,
                        ),
                    )
                columns.append(column)
            return columns
        if item.table in TENANT_TABLES and not item.renamed:
            return [_Column(None, star_of=item.table, tenant=_Tenant(constrained, name))]
        return [_OPAQUE]

    def tenant_value(self, value: Any, level: _Level) -> _Tenant | None:
        number = _parameter(value)
        if number is not None:  # counted as the tenant's once something is found equal to it
            return _Tenant(True, None, frozenset({number}))
        found = self.tenant_item(value, level)
        if found is None:
            return None
        scope, item = found
        return _Tenant(item in scope.constrained, item if scope is level else None)


# --- Helpers over the syntax tree --------------------------------------------------------------


def _walk(value: Any) -> Iterator[ast.Node]:
    if isinstance(value, tuple | list):
        for element in value:
            yield from _walk(element)
    elif isinstance(value, ast.Node):
        yield value
        for attr in value:
            yield from _walk(getattr(value, attr))


def _subqueries(value: Any, *, lateral: bool = False) -> Iterator[ast.Node]:
    """The statements nested in an expression tree (sublinks), not descending into them. With
    `lateral`, also the LATERAL subqueries of a FROM list (the others are FROM items)."""
    if isinstance(value, tuple | list):
        for element in value:
            yield from _subqueries(element, lateral=lateral)
    elif isinstance(value, ast.SubLink):
        yield from _subqueries(value.testexpr, lateral=lateral)
        if value.subselect is not None:
            yield value.subselect
    elif isinstance(value, ast.RangeSubselect):
        if lateral and value.lateral and value.subquery is not None:
            yield value.subquery
    elif isinstance(value, ast.SelectStmt | ast.UpdateStmt | ast.DeleteStmt | ast.InsertStmt):
        yield value
    elif isinstance(value, ast.Node) and not isinstance(value, ast.WithClause):
        for attr in value:
            yield from _subqueries(getattr(value, attr), lateral=lateral)


def _conjuncts(node: ast.Node | None) -> list[ast.Node]:
    """The top-level AND terms of a condition (an OR or NOT is one opaque term)."""
    if node is None:
        return []
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [term for arg in node.args or () for term in _conjuncts(arg)]
    return [node]


def _equalities(node: ast.Node) -> list[tuple[Any, Any]]:
    """The `a = b` pairs a term asserts: `a = b`, `(a, b) = (c, d)` or `a IN (b)`."""
    if not isinstance(node, ast.A_Expr) or not _is_equals(node.name):
        return []
    if node.kind == enums.A_Expr_Kind.AEXPR_OP:
        left, right = node.lexpr, node.rexpr
        if isinstance(left, ast.RowExpr) and isinstance(right, ast.RowExpr):
            if left.args and right.args and len(left.args) == len(right.args):
                return list(zip(left.args, right.args, strict=True))
            return []
        return [(left, right)]
    if node.kind == enums.A_Expr_Kind.AEXPR_IN:
        values = node.rexpr
        if isinstance(values, tuple) and len(values) == 1:
            return [(node.lexpr, values[0])]
    return []


def _is_equals(name: tuple[Any, ...] | None) -> bool:
    """Whether an operator name is plain `=` (not `OPERATOR(schema.=)`, not another one)."""
    return name is not None and len(name) == 1 and getattr(name[0], "sval", None) == "="


def _parameter(node: Any) -> int | None:
    """The number of the bound parameter `node` is (through casts), if it is one."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.number if isinstance(node, ast.ParamRef) else None


def _one_per_row(node: ast.SelectStmt) -> bool:
    """Whether a SELECT gives one row per row it reads, unchanged by where a filter is applied."""
    if node.groupClause or node.havingClause or node.distinctClause or node.windowClause:
        return False
    if node.lockingClause or node.valuesLists or node.intoClause or not _unlimited(node):
        return False
    # Any call might be an aggregate, a window function or a set-returning function.
    return not any(isinstance(n, ast.FuncCall) for n in _expression_nodes(node.targetList))


def _unlimited(node: ast.SelectStmt) -> bool:
    return node.limitCount is None and node.limitOffset is None


def _expression_nodes(value: Any) -> Iterator[ast.Node]:
    """The nodes of an expression tree of this level (not inside its sublinks)."""
    if isinstance(value, tuple | list):
        for element in value:
            yield from _expression_nodes(element)
    elif isinstance(value, ast.Node) and not isinstance(value, ast.SubLink):
        yield value
        for attr in value:
            yield from _expression_nodes(getattr(value, attr))


def _renamed(rows: _Rows, names: tuple[Any, ...] | None) -> _Rows:
    """`rows` seen through a column alias list `alias(a, b, ...)`."""
    if not names:
        return rows
    if any(column.star_of or column.opaque for column in rows.columns):
        return _UNKNOWN_ROWS  # positions behind a `*` are unknown
    columns = [
        replace(column, name=names[index].sval if index < len(names) else column.name)
        for index, column in enumerate(rows.columns)
    ]
    return _Rows(tuple(columns), rows.one_per_row)


def _aligned(left: tuple[_Column, ...], right: tuple[_Column, ...]) -> tuple[_Column, ...]:
    """The columns of a set operation: the left arm's names, a tenant id where both arms hold
    one at that position (constrained when both are), up to where the arms stop lining up."""
    columns: list[_Column] = []
    for a, b in zip(left, right, strict=False):
        if a.opaque or b.opaque or a.star_of != b.star_of:
            columns.append(_OPAQUE)
            break
        tenant = None
        if a.tenant is not None and b.tenant is not None:
            both_sourced = a.tenant.source is not None and b.tenant.source is not None
            tenant = _Tenant(
                a.tenant.constrained and b.tenant.constrained,
                "<arms>" if both_sourced else None,
                a.tenant.parameters | b.tenant.parameters,
            )
        columns.append(replace(a, tenant=tenant))
    else:
        if len(left) != len(right):
            columns.append(_OPAQUE)
    return tuple(columns)
