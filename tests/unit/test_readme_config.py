"""The configuration table of docs/configuration.md is exactly what the settings module defines."""

from __future__ import annotations

from pathlib import Path

from pydantic.fields import FieldInfo

from server.config import Settings

CONFIGURATION = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
START = "<!-- settings-table:start -->\n"
END = "\n<!-- settings-table:end -->"


def _default(field: FieldInfo) -> str:
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def _row(name: str, field: FieldInfo) -> str:
    flag = "--" + name.replace("_", "-")
    flags = f"`{flag}`"
    if field.annotation is bool:
        flags += f" / `--no-{flag[2:]}`"
    return f"| {flags} | `{field.alias}` | {_default(field)} | {field.description} |"


def expected_table() -> str:
    """The configuration table as the settings define it."""
    rows = [
        "| Flag | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
        *(_row(name, field) for name, field in Settings.model_fields.items()),
    ]
    return "\n".join(rows)


def test_the_readme_configuration_table_matches_the_settings() -> None:
    table = CONFIGURATION.read_text().split(START, 1)[1].split(END, 1)[0]
    expected = expected_table()
    assert table == expected, f"docs/configuration.md's table is stale; expected:\n{expected}"
