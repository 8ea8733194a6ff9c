"""Command line: `python -m server [serve|migrate|generate-data|check-counts]`. Flags mirror
`server.config.Settings`; generate-data and check-counts have their own groups of options."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from server.config import Settings, load_settings
from server.datagen import DatasetSpec

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
        choices=("serve", "migrate", "generate-data", "check-counts"),
        help="serve (default): run the gRPC server; migrate: apply database migrations; "
        "generate-data: migrate, then load the benchmark dataset; check-counts: recount "
        "sessions and messages and report (or --repair) counters that drifted",
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
    _add_generate_data_arguments(parser)
    checks = parser.add_argument_group(
        "check-counts options",
        "--tenant ID checks only that tenant (default: all). Exit status 0 when every counter "
        "agrees with a recount (or was repaired), 1 when some drifted and --repair was not given.",
    )
    checks.add_argument(
        "--repair",
        action="store_true",
        help="correct the counters that drifted (safe while other services write)",
    )
    return parser


# Dest prefix of the generate-data options, which are command options rather than settings.
_DATAGEN = "datagen_"


def _add_generate_data_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DatasetSpec()
    group = parser.add_argument_group(
        "generate-data options",
        "Sizes of the benchmark dataset (not settings: no env vars). Default: tenant "
        "<prefix>-big with --sessions sessions plus --huge-sessions huge ones, and "
        "--small-tenants tenants <prefix>-small-NNN. A 1M-session tenant: --sessions 1000000 "
        "--messages-per-session 2 --tenant bench-1m --small-tenants 0 --huge-sessions 0",
    )
    sizes = (
        ("sessions", "sessions of the big tenant"),
        ("messages_per_session", "average messages per session (each varies from half to 1.5x)"),
        ("small_tenants", "number of small tenants"),
        ("small_tenant_sessions", "average sessions per small tenant (+-25%%)"),
        ("huge_sessions", "extra huge sessions in the big tenant (ids huge-0, huge-1, ...)"),
        ("huge_session_messages", "messages per huge session"),
        ("seed", "random seed: the same seed and sizes give the same rows"),
        (
            "days",
            "created_at spreads over this many days before "
            + defaults.reference_time.strftime("%Y-%m-%dT%H:%MZ"),
        ),
    )
    for name, text in sizes:
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=_DATAGEN + name,
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} [default {getattr(defaults, name)}]",
        )
    group.add_argument(
        "--tenant-prefix",
        dest=_DATAGEN + "tenant_prefix",
        default=defaults.tenant_prefix,
        metavar="PREFIX",
        help=f"prefix of the generated tenant ids [default {defaults.tenant_prefix}]",
    )
    group.add_argument(
        "--tenant",
        dest=_DATAGEN + "tenant",
        default=None,
        metavar="ID",
        help="generate-data: id of the big tenant [default <prefix>-big]; check-counts: the "
        "only tenant to check [default all]",
    )
    group.add_argument(
        "--replace",
        dest=_DATAGEN + "replace",
        action="store_true",
        help="delete and reload tenants that already have sessions (default: skip them)",
    )


def _dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    """The generate-data options as a DatasetSpec; ValueError names an invalid size."""
    return DatasetSpec(
        **{
            name.removeprefix(_DATAGEN): value
            for name, value in vars(args).items()
            if name.startswith(_DATAGEN)
        }
    )


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
    if args.command == "generate-data":
        try:
            spec = _dataset_spec(args)
        except ValueError as error:
            print(f"invalid generate-data options: {error}", file=sys.stderr)
            return EXIT_USAGE
        return runner.generate_data(settings, spec)
    if args.command == "check-counts":
        tenant_id = getattr(args, _DATAGEN + "tenant")  # --tenant is shared with generate-data
        return runner.check_counts(settings, tenant_id=tenant_id, repair=args.repair)
    return runner.serve(settings)


if __name__ == "__main__":
    sys.exit(main())
