"""Command line: `python -m server [serve|migrate|check-counts]`. Flags mirror
`server.config.Settings`; check-counts has its own group of options. Developer tools (demo data,
the benchmark dataset) live apart: `python -m server.tools`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from server.config import Settings, load_settings

logger = logging.getLogger("server")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per setting, named after it, with its env var and default in the help."""
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="SessionMonitoring gRPC service. Every flag can also be set by its env var.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "migrate", "check-counts"),
        help="serve (default): run the gRPC server; migrate: apply database migrations; "
        "check-counts: recount sessions and messages and report (or --repair) counters that "
        "drifted",
    )
    for name, field in Settings.model_fields.items():
        default = (
            field.default.get_secret_value()
            if hasattr(field.default, "get_secret_value")
            else field.default
        )
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env {field.alias}; default {default}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, metavar=field.alias, help=help_text)
    checks = parser.add_argument_group(
        "check-counts options",
        "--tenant ID checks only that tenant (default: all). Exit status 0 when every counter "
        "agrees with a recount (or was repaired), 1 when some drifted and --repair was not given.",
    )
    checks.add_argument("--tenant", metavar="ID", help="the only tenant to check [default all]")
    checks.add_argument(
        "--repair",
        action="store_true",
        help="correct the counters that drifted (safe while other services write)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return EXIT_USAGE
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
