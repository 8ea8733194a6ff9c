"""Developer tools, not shipped in the wheel: `python -m server.tools COMMAND --help`.

Each resolves its database as the server does: DATABASE_URL (or --database-url), else the
embedded PostgreSQL in SESSIONMONITORING_DATA_DIR (default .data).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from server.config import Settings, load_settings
from server.data.migrate import upgrade_to_head
from server.observability import configure_logging
from server.runner import database_url
from server.tools.datagen import DatasetSpec, generate
from server.tools.demo import seed_demo
from server.tools.psql import open_psql

EXIT_USAGE = 2
logger = logging.getLogger("server.tools")


def build_parser() -> argparse.ArgumentParser:
    """`seed-demo` and `generate-data`, each with its own options."""
    parser = argparse.ArgumentParser(prog="python -m server.tools", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser(
        "seed-demo",
        help="with no DATABASE_URL: migrate the embedded PostgreSQL and load the demo tenants "
        "when it is empty (`make run` runs this, then serves)",
    )
    _add_database_arguments(seed)
    data = commands.add_parser(
        "generate-data",
        help="migrate, then load the benchmark dataset (progress on stderr)",
        description="Sizes of the benchmark dataset. Default: tenant <prefix>-big with "
        "--sessions sessions plus --huge-sessions huge ones, and --small-tenants tenants "
        "<prefix>-small-NNN. A 1M-session tenant: --sessions 1000000 --messages-per-session 2 "
        "--tenant bench-1m --small-tenants 0 --huge-sessions 0",
    )
    _add_database_arguments(data)
    _add_dataset_arguments(data)
    shell = commands.add_parser(
        "psql",
        help="psql on the embedded database while it runs (or on DATABASE_URL); arguments after "
        "the command go to psql",
    )
    _add_database_arguments(shell)
    return parser


def _add_database_arguments(parser: argparse.ArgumentParser) -> None:
    for name in ("database_url", "data_dir"):
        field = Settings.model_fields[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=field.alias,
            help=f"{field.description} [env {field.alias}]",
        )


_SIZES = (
    ("sessions", "sessions of the big tenant"),
    ("messages_per_session", "average messages per session (each varies from half to 1.5x)"),
    ("small_tenants", "number of small tenants"),
    ("small_tenant_sessions", "average sessions per small tenant (+-25%%)"),
    ("huge_sessions", "extra huge sessions in the big tenant (ids huge-0, huge-1, ...)"),
    ("huge_session_messages", "messages per huge session"),
    ("seed", "random seed: the same seed and sizes give the same rows"),
    ("days", "created_at spreads over this many days before the reference time"),
)


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DatasetSpec()
    for name, text in _SIZES:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} [default {getattr(defaults, name)}]",
        )
    parser.add_argument(
        "--tenant-prefix",
        default=defaults.tenant_prefix,
        metavar="PREFIX",
        help=f"prefix of the generated tenant ids [default {defaults.tenant_prefix}]",
    )
    parser.add_argument(
        "--tenant", metavar="ID", help="id of the big tenant [default <prefix>-big]"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete and reload tenants that already have sessions (default: skip them)",
    )


def _generate_data(settings: Settings, spec: DatasetSpec) -> int:
    url, _ = database_url(settings)
    upgrade_to_head(url)

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = asyncio.run(generate(url, spec, progress=report))
    skipped = sum(1 for tenant in summary.tenants if tenant.skipped)
    rate = summary.messages / max(summary.seconds, 1e-9)
    report(
        f"generated {summary.sessions:,} sessions and {summary.messages:,} messages in "
        f"{len(summary.tenants) - skipped} tenants ({skipped} skipped) in {summary.seconds:.1f}s "
        f"({rate:,.0f} messages/s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one tool; returns the process exit code."""
    parsed, extra = build_parser().parse_known_args(argv)
    if extra and parsed.command != "psql":
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    args = vars(parsed)
    command = args.pop("command")
    location = {name: args.pop(name) for name in ("database_url", "data_dir")}
    settings = load_settings(**{name: value for name, value in location.items() if value})
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    if command == "seed-demo":
        return seed_demo(settings)
    if command == "psql":
        return open_psql(settings, extra)
    try:
        spec = DatasetSpec(**args)
    except ValueError as error:
        print(f"invalid generate-data options: {error}", file=sys.stderr)
        return EXIT_USAGE
    return _generate_data(settings, spec)


if __name__ == "__main__":
    sys.exit(main())
