"""Command line: `python -m server [serve|migrate|check-counts] [flags]`, serve by default.

Flags mirror `server.config.Settings` (each command takes the ones it uses; every env var
applies to all). Settings are validated before anything starts: an invalid one is one line on
stderr and exit code 2. Developer tools (demo data, the benchmark dataset) live apart:
`python -m server.tools`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from server.config import Settings, load_settings

logger = logging.getLogger("server")

EXIT_USAGE = 2
PROG = "python -m server"

# What the database commands need; serve takes every setting.
_DATABASE_SETTINGS = ("database_url", "data_dir", "db_connect_timeout", "log_level", "log_format")
_COMMANDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "serve": ("run the gRPC server (the default command)", None),
    "migrate": ("apply the database migrations, then exit", _DATABASE_SETTINGS),
    "check-counts": (
        "recount sessions and messages, report the counters that drifted (or --repair them)",
        _DATABASE_SETTINGS,
    ),
}
_METAVARS = {
    "address": "HOST:PORT",
    "metrics_address": "HOST:PORT",
    "database_url": "URL",
    "database_read_url": "URL",
}


def _metavar(name: str, field: FieldInfo) -> str:
    if name in _METAVARS:
        return _METAVARS[name]
    choices = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is typing.Literal:
        return "{" + ",".join(str(choice) for choice in choices) + "}"
    if field.annotation is int:
        return "N"
    if field.annotation is float:
        return "SECONDS"
    if name.endswith("_file"):
        return "FILE"
    if name.endswith("_dir"):
        return "DIR"
    return "VALUE"


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """One flag per setting, named after it, with its env var and default in the help."""
    for name in names:
        field = Settings.model_fields[name]
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env {field.alias}; default {default}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, metavar=_metavar(name, field), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: a subcommand per job, each with its own --help."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SessionMonitoring gRPC service. Every flag can also be set by its env var; "
        f"`{PROG} COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"sessionmonitoring {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (summary, names) in _COMMANDS.items():
        sub = commands.add_parser(
            command, help=summary, description=summary[0].upper() + summary[1:]
        )
        _add_setting_flags(sub, names if names is not None else tuple(Settings.model_fields))
        if command == "check-counts":
            sub.add_argument(
                "--tenant", metavar="ID", help="the only tenant to check [default all]"
            )
            sub.add_argument(
                "--repair",
                action="store_true",
                help="correct the counters that drifted (safe while other services write); "
                "exit status 1 when some drifted and --repair was not given",
            )
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line; no command, or flags first, means `serve`."""
    arguments = list(argv)
    if not arguments or (
        arguments[0].startswith("-") and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "serve")
    return build_parser().parse_args(arguments)


def _problem(error: ErrorDetails) -> str:
    """One invalid setting in a few words; a missing file is named, since it is no secret."""
    text = f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
    if error["type"] == "path_not_file":
        text += f" ({error['input']})"
    return text


def _version() -> str:
    try:
        return metadata.version("sessionmonitoring")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = parse(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        print(f"invalid settings: {problems}", file=sys.stderr)
        return EXIT_USAGE
    # gRPC's fork handlers only matter to forked children that use gRPC; workers are spawned,
    # and the handlers' notice on every fork (the embedded PostgreSQL's) is noise. C-core logs
    # bypass Python's logging: keep them to errors, the service's own lines say the rest.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from server import runner  # deferred: imports grpc and SQLAlchemy only once settings are valid
    from server.observability import configure_logging

    configure_logging(level=settings.log_level, log_format=settings.log_format)

    if args.command == "migrate":
        return runner.migrate(settings)
    if args.command == "check-counts":
        return runner.check_counts(settings, tenant_id=args.tenant, repair=args.repair)
    return runner.serve(settings)


if __name__ == "__main__":
    sys.exit(main())
