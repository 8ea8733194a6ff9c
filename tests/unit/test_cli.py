"""The command line: one flag per setting in --help, and invalid settings exit 2 with one line."""

from __future__ import annotations

import pytest

from server.__main__ import EXIT_USAGE, build_parser, main
from server.config import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment; a developer's exported variables must not change results.
    for field in Settings.model_fields.values():
        assert field.alias is not None
        monkeypatch.delenv(field.alias, raising=False)


def _help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    # argparse wraps lines at the terminal width; compare with whitespace normalised.
    return " ".join(capsys.readouterr().out.split())


def test_help_lists_every_setting_with_its_flag_and_env_var(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help_text(capsys)
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert f"env {field.alias};" in text, field.alias
        assert field.description is not None
        assert " ".join(field.description.split()) in text, name


def test_help_shows_defaults_and_offers_a_negative_flag_for_booleans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help_text(capsys)
    assert "default 127.0.0.1:50051]" in text
    assert "default 10]" in text
    assert "--no-access-log" in text


def test_flags_parse_into_settings_names() -> None:
    args = build_parser().parse_args(["migrate", "--db-pool-size", "5", "--no-access-log"])
    assert args.command == "migrate"
    assert args.db_pool_size == "5"
    assert args.access_log is False
    assert args.address is None  # unset flags fall back to env and defaults


def test_the_command_defaults_to_serve() -> None:
    assert build_parser().parse_args([]).command == "serve"


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["launch"])
    assert exit_info.value.code == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--db-pool-size", "0"], "db_pool_size"),
        (["--db-pool-size", "many"], "db_pool_size"),
        (["--db-pool-timeout", "0"], "db_pool_timeout"),
        (["--grace-period", "-1"], "grace_period"),
        (["--log-level", "LOUD"], "log_level"),
    ],
)
def test_an_invalid_flag_exits_2_with_one_line_naming_the_setting(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("invalid settings: ")
    assert field in lines[0].lower()


def test_several_invalid_settings_are_reported_on_the_same_single_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--db-pool-size", "0", "--log-level", "LOUD", "migrate"]) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert "db_pool_size" in line
    assert "log_level" in line


def test_an_invalid_environment_variable_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "-3")
    assert main([]) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("invalid settings: ")
    assert "DB_CONNECT_TIMEOUT" in line
