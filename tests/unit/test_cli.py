"""The command line: a --help per command with one flag per setting it uses, --version, and
invalid settings exit 2 with one line before anything starts."""

from __future__ import annotations

from importlib import metadata

import pytest

from server.__main__ import EXIT_USAGE, main, parse
from server.config import Settings, check_address


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment; a developer's exported variables must not change results.
    for field in Settings.model_fields.values():
        assert field.alias is not None
        monkeypatch.delenv(field.alias, raising=False)


def _help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse([*argv, "--help"])
    assert exit_info.value.code == 0
    # argparse wraps lines at the terminal width; compare with whitespace normalised.
    return " ".join(capsys.readouterr().out.split())


def test_help_lists_every_setting_with_its_flag_and_env_var(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help_text(capsys, "serve")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert f"env {field.alias};" in text, field.alias
        assert field.description is not None
        assert " ".join(field.description.split()) in text, name


def test_help_shows_defaults_and_offers_a_negative_flag_for_booleans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help_text(capsys, "serve")
    assert "--address HOST:PORT" in text
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in text
    assert "--tls-cert-file FILE" in text
    assert "default 127.0.0.1:50051]" in text
    assert "default 10]" in text
    assert "--no-access-log" in text


def test_flags_parse_into_settings_names() -> None:
    args = parse(["serve", "--db-pool-size", "5", "--no-access-log"])
    assert args.command == "serve"
    assert args.db_pool_size == "5"
    assert args.access_log is False
    assert args.address is None  # unset flags fall back to env and defaults


def test_the_command_defaults_to_serve_also_when_flags_come_first() -> None:
    assert parse([]).command == "serve"
    assert parse(["--address", "127.0.0.1:0"]).address == "127.0.0.1:0"


def test_the_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help_text(capsys)
    for command in ("serve", "migrate", "check-counts"):
        assert command in text


def test_a_database_command_offers_only_the_flags_it_uses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help_text(capsys, "migrate")
    assert "--database-url URL" in text
    assert "--address" not in text
    assert "--tenant" not in _help_text(capsys, "serve")
    assert "--tenant ID" in _help_text(capsys, "check-counts")


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--version"])
    assert exit_info.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"sessionmonitoring {metadata.version('sessionmonitoring')}"
    )


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
        (["--address", "nonsense"], "address"),
        (["--address", "localhost:65536"], "address"),
        (["--address", "[::1:50051"], "address"),
        (["--metrics-address", "no port"], "metrics_address"),
        (["--tls-cert-file", "missing.pem", "--tls-key-file", "missing.key"], "tls_cert_file"),
        (["--caller-policy-file", "missing.toml"], "caller_policy_file"),
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
    assert main(["migrate", "--db-connect-timeout", "0", "--log-level", "LOUD"]) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert "db_connect_timeout" in line
    assert "log_level" in line


def test_an_invalid_environment_variable_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "-3")
    assert main([]) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("invalid settings: ")
    assert "DB_CONNECT_TIMEOUT" in line


@pytest.mark.parametrize(
    "address", ["127.0.0.1:50051", "0.0.0.0:0", "[::]:50051", "[::1]:1", "my-host.internal:443"]
)
def test_valid_addresses_are_accepted(address: str) -> None:
    check_address(address)
