"""`python -m server.tools.bench [options]`: see `--help`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

QUICK_OUTPUT = Path(".data") / "bench" / "quick"
EXIT_FAILED = 1
EXIT_MISSING_TOOL = 3


def _concurrency(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return levels


def _keys(value: str) -> frozenset[str]:
    keys = frozenset(part.strip() for part in value.split(",") if part.strip())
    if not keys:
        raise argparse.ArgumentTypeError("at least one scenario key")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.tools.bench",
        description=(
            "Load-test every RPC of the real server with h2load and compare each result with the "
            "raw-SQL and bare-gRPC limits measured in the same run. Uses BENCH_DATABASE_URL, or "
            "the embedded PostgreSQL in .data/bench. Writes BENCHMARKS.md and benchmarks.png."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny dataset (its own database), short cells; writes to "
        f"{QUICK_OUTPUT} unless --output is given",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=(1, 16, 64),
        help="calls in flight, comma-separated (default 1,16,64)",
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per cell (default 5; --quick 1)"
    )
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds before each cell (default 1; --quick 0.3)"
    )
    parser.add_argument(
        "--workers", type=int, help="passed to the server as --workers N (only when given)"
    )
    parser.add_argument(
        "--scenarios",
        type=_keys,
        help="only these scenarios, comma-separated keys such as list_first,detail (default: "
        "all); for A/B runs while changing one path",
    )
    parser.add_argument(
        "--skip-generate",
        action="store_true",
        help="use the data already in the database; never generate",
    )
    parser.add_argument(
        "--with-1m",
        dest="comparison",
        action="store_true",
        help="also generate (once; takes minutes) and list a 1,000,000-session tenant and a "
        "10,000-session one, and compare their page-1 latency",
    )
    parser.add_argument(
        "--output", type=Path, help="folder for BENCHMARKS.md and benchmarks.png (default .)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from server.tools.bench import h2load

    try:
        h2load.require_h2load()
    except h2load.H2loadMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "error: matplotlib is missing: pip install -e '.[bench]' (make bench does this)",
            file=sys.stderr,
        )
        return EXIT_MISSING_TOOL
    from server.tools.bench import report, runner

    output = args.output or (QUICK_OUTPUT if args.quick else Path())
    options = runner.Options(
        quick=args.quick,
        concurrency=args.concurrency,
        duration=args.duration or (1.0 if args.quick else 5.0),
        warmup=args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0),
        workers=args.workers,
        scenarios=args.scenarios,
        skip_generate=args.skip_generate,
        comparison=args.comparison,
        database_url=os.environ.get("BENCH_DATABASE_URL") or None,
        output=output,
        workdir=Path(".data") / "bench" / "run",
    )
    try:
        results = runner.run_blocking(options)
    except runner.CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    report_path, chart_path = report.write(results, args_list)
    print()
    print(report.table(results))
    print()
    print(f"wrote {report_path} and {chart_path}")
    if results.failures:
        print("FAILED checks:\n  " + "\n  ".join(results.failures), file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
