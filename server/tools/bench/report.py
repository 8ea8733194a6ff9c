"""BENCHMARKS.md and its chart: the machine, versions, dataset, and every measurement."""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import sqlalchemy

from server.tools.bench import h2load, sqlreplay, watch, writers
from server.tools.bench.runner import Cell, Results, ScenarioRun

CHART_NAME = "benchmarks.png"
TARGET_RATIO = 0.5  # the target: every scenario at half its tighter limit or more
REPORT_NAME = "BENCHMARKS.md"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _h2load_version() -> str:
    import subprocess

    try:
        output = subprocess.run(  # noqa: S603 - fixed argv, our own binary lookup
            [h2load.require_h2load(), "--version"], capture_output=True, text=True, check=False
        ).stdout
    except (OSError, h2load.H2loadMissingError):
        return "unknown"
    return output.strip().split()[-1] if output.strip() else "unknown"


def limit(cell: Cell, empty: h2load.LoadResult | None) -> float:
    """The lower of the two limits for a cell (calls/s)."""
    limits = [cell.sql.calls_per_second]
    if empty is not None:
        limits.append(empty.calls_per_second)
    return min(limits)


def ratios(cell: Cell, empty: h2load.LoadResult | None) -> tuple[float, float, float]:
    """The service and the floor against the tighter limit, and the service against the floor."""
    tighter = limit(cell, empty)
    service, floor = cell.service.calls_per_second, cell.floor.calls_per_second
    return service / tighter, floor / tighter, service / floor


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else _fmt_rate(value)


def _fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: Results) -> str:
    """The main table, one row per scenario and concurrency (Markdown)."""
    lines = [
        "| Scenario | c | calls/s | p50 ms | p99 ms | server CPU µs/call | floor calls/s "
        "| floor CPU µs/call | raw SQL calls/s | empty RPC calls/s | ratio | floor ratio "
        "| service / floor | replies |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for run in results.runs:
        if not run.cells:
            lines.append(f"| {run.scenario.title} |" + " |" * 12 + " check failed |")
        for cell in run.cells:
            empty = results.empty.get(cell.concurrency)
            ratio, floor_ratio, share = ratios(cell, empty)
            replies = "ok" if cell.bad_replies == 0 else f"**{cell.bad_replies:,} bad**"
            lines.append(
                f"| {run.scenario.title} | {cell.concurrency} "
                f"| {_fmt_rate(cell.service.calls_per_second)} "
                f"| {_fmt_ms(cell.service.p50_ms)} | {_fmt_ms(cell.service.p99_ms)} "
                f"| {_fmt_cpu(cell.server_cpu_us)} "
                f"| {_fmt_rate(cell.floor.calls_per_second)} | {_fmt_cpu(cell.floor_cpu_us)} "
                f"| {_fmt_rate(cell.sql.calls_per_second)} "
                f"| {_fmt_rate(empty.calls_per_second) if empty else '-'} "
                f"| {ratio:.2f} | {floor_ratio:.2f} | {share:.2f} | {replies} |"
            )
    return "\n".join(lines)


def _floor_summary(results: Results) -> list[str]:
    """What the floor says about the 0.5 target, in this run's figures."""
    cells = [
        (run, cell, ratios(cell, results.empty.get(cell.concurrency)))
        for run in results.runs
        for cell in run.cells
    ]
    if not cells:
        return []
    floor_ratios = [floor_ratio for _, _, (_, floor_ratio, _) in cells]
    shares = [share for _, _, (_, _, share) in cells]
    below = [
        f"{run.scenario.title} at c={cell.concurrency} ({floor_ratio:.2f})"
        for run, cell, (_, floor_ratio, _) in cells
        if floor_ratio < TARGET_RATIO
    ]
    return [
        f"The floor reaches {min(floor_ratios):.2f} to {max(floor_ratios):.2f} of the tighter "
        f"limit, and the service {min(shares):.2f} to {max(shares):.2f} of the floor. "
        + (
            f"Below {TARGET_RATIO} even for the floor, so for any implementation on grpc.aio and "
            f"asyncpg on this machine: {'; '.join(below)}."
            if below
            else f"The floor reaches {TARGET_RATIO} in every cell."
        ),
        "",
    ]


def _empty_cpu(results: Results) -> list[str]:
    measured = [(c, us) for c, us in sorted(results.empty_cpu_us.items()) if us is not None]
    if not measured:
        return []
    per_c = ", ".join(f"{us:,.0f} µs at c={c}" for c, us in measured)
    return [
        f"The empty-RPC server's CPU per call, measured the same way: {per_c}. What a service "
        "call costs beyond that is its handler, its database round trips and the work of "
        "switching between them.",
        "",
    ]


def _walk(results: Results) -> list[str]:
    walk = results.walk
    if walk is None:
        return []
    return [
        f"Every message of `{walk.session_id}` ({walk.messages:,}) was read with "
        f"GetSessionDetail and next_page_token, {walk.page_size:,} per page: {walk.pages} "
        f"pages in {walk.seconds:.1f} s, each message once and in order; the largest reply was "
        f"{walk.largest_reply_bytes:,} bytes (clients accept 4 MiB by default).",
        "",
    ]


def _comparison(results: Results) -> list[str]:
    facts = results.facts
    if facts.million is None or facts.ten_thousand is None or not results.sizes:
        return []
    rounds = len(next(iter(results.sizes.values()))[0])
    lines = [
        "## Tenant size: ListSessions page 1",
        "",
        f"`{facts.million.tenant_id}` has {facts.million.sessions:,} sessions, "
        f"`{facts.ten_thousand.tenant_id}` {facts.ten_thousand.sessions:,}; both were generated "
        "alike (same spread over time, statuses and channels). A page 1 that does not grow "
        "with the tenant shows totals and the first page come from counters and the index, "
        f"not from a scan. Measured apart from the table above: {rounds} rounds per "
        "concurrency, each one cell of the large tenant then one of the small (same warm-up "
        "and length), and the median p50 of each, because latency here drifts between cells "
        "measured minutes apart.",
        "",
        "| c | p50 ms, large (rounds) | p50 ms, small (rounds) | large / small (medians) |",
        "|--:|--:|--:|--:|",
    ]
    for concurrency, (large, small) in sorted(results.sizes.items()):
        ratio = statistics.median(large) / statistics.median(small)
        lines.append(
            f"| {concurrency} | {' / '.join(_fmt_ms(value) for value in large)} "
            f"| {' / '.join(_fmt_ms(value) for value in small)} | {ratio:.2f} |"
        )
    return [*lines, ""]


def _writers(results: Results) -> list[str]:
    measured = results.writers
    if measured is None:
        return []
    return [
        "## Writers' tax",
        "",
        f"What our triggers cost the services that write the chat tables "
        f"(`server/tools/bench/writers.py`): {writers.WRITERS} connections each insert a session "
        "and its first message for one tenant per transaction, committed at once or held open "
        f"20 ms, for {measured.seconds:g} s per round, {measured.rounds} rounds alternating "
        "between our triggers enabled and disabled (medians), with the service's folder running "
        f"at its default interval. Then a COPY of {writers.COPY_ROWS:,} messages into "
        f"{writers.COPY_SESSIONS:,} sessions each way, and the fold of what it appended. "
        "Target: at least 0.9x at every hold.",
        "",
        *(f"- {line}" for line in writers.summary(measured)),
        "",
    ]


def _watch(results: Results) -> list[str]:
    measured = results.watch
    if measured is None:
        return []
    return [
        "## Watch",
        "",
        "WatchSessions under load (`server/tools/bench/watch.py`), against a server process of "
        "its own started like the one above, with its default settings but "
        f"MAX_CONCURRENT_RPCS={measured.max_concurrent_rpcs:,}: a stream holds a concurrent-call "
        f"slot for its whole life, and the default ({watch.DEFAULT_MAX_RPCS}) refuses most of "
        f"the {watch.SPREAD.streams:,} streams (first line). The streams are read by "
        f"{measured.clients} client processes (grpc.aio on uvloop, one channel each, streams "
        "dealt round robin), which share this machine's CPUs with the server and PostgreSQL: "
        "their CPU is shown beside the server's. The changes come from plain asyncpg SQL, "
        "one per transaction (a new session, then messages in it, for each tenant in turn), "
        f"paced evenly over {watch.WRITER_CONNECTIONS} connections at most. Latency runs "
        "from the writer's clock right after COMMIT returned to the client's when the event "
        "arrived (same machine). Every stream's events are checked against its tenant's "
        "committed changes: lost, twice, out of commit order within a session, or made by no "
        "writer of ours; clients wait for late events as long as any keep coming, so *lost* "
        f"counts those still missing once none came for {watch.STALL_SECONDS:g} s. CPU, from "
        "/proc, is counted from the first commit until every stream had its last event and "
        "divided by the events delivered: the server process (all its threads), the clients, "
        "PostgreSQL, the writers (the benchmark's own process) and *other*, what none of them "
        "accounts for (the kernel's loopback networking, any other process on the machine).",
        "",
        *(f"- {line}" for line in watch.summary(measured)),
        "",
    ]


def _scenario_details(run: ScenarioRun) -> list[str]:
    scenario = run.scenario
    return [
        f"- **{scenario.title}** (`{scenario.method}`, tenant `{scenario.tenant}`): "
        f"{scenario.note}. Expected {scenario.expected_rows} rows per reply; "
        f"{run.reply_bytes:,} bytes on the wire.",
        "  Checks with the Python client: " + "; ".join(run.checks) + ".",
        "",
        "  <details><summary>SQL replayed as its raw-SQL limit</summary>",
        "",
        "  ```sql",
        *(f"  {line}" for line in sqlreplay.describe(run.sql)),
        "  ```",
        "",
        "  </details>",
        "",
    ]


# Written by people, not measured by this run: what was changed because of earlier runs.
DECISIONS = Path(__file__).with_name("decisions.md")


def markdown(results: Results, command: str, chart_name: str) -> str:
    """The whole report."""
    options, facts = results.options, results.facts
    concurrency = ", ".join(str(c) for c in options.concurrency)
    connections = "; ".join(
        f"c={c}: {h2load.split_concurrency(c)[0]} connection(s) x "
        f"{h2load.split_concurrency(c)[1]} stream(s)"
        for c in options.concurrency
    )
    small_sessions = f"{facts.small.sessions:,}"
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m server.tools.bench`): do not edit, rerun it.",
        "",
        f"![calls per second per scenario]({chart_name})",
        "",
        "## Setup",
        "",
        f"- Command: `{command}`"
        + (" (quick smoke run: tiny dataset, short cells)" if options.quick else ""),
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_memory()} memory, "
        f"{platform.system()} {platform.release()}. Load generator, service, PostgreSQL and the "
        "raw-SQL replayer all share these CPUs.",
        f"- Versions: Python {platform.python_version()}, PostgreSQL {facts.postgres_version}, "
        f"grpcio {grpc.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"asyncpg {asyncpg.__version__}, h2load {_h2load_version()}.",
        "- Server: `python -m server serve` as a subprocess with its default settings "
        "(DB pool 10 connections), LOG_LEVEL=WARNING"
        + (f", --workers {options.workers}" if options.workers else ", one process")
        + ".",
        f"- Dataset: {facts.total_sessions:,} sessions and about {facts.total_messages:,} "
        f"messages in all. Big tenant `{facts.big.tenant_id}`: {facts.big.sessions:,} sessions, "
        f"{facts.big.messages:,} messages (including `{facts.huge_session}` with "
        f"{facts.huge_messages:,}); {facts.small_tenants} small tenants "
        f"(`{facts.small.tenant_id}` has {small_sessions} sessions)"
        + (
            f"; `{facts.million.tenant_id}` {facts.million.sessions:,} sessions"
            if facts.million
            else ""
        )
        + (
            f"; `{facts.ten_thousand.tenant_id}` {facts.ten_thousand.sessions:,} sessions"
            if facts.ten_thousand
            else ""
        )
        + ".",
        f"- Each cell: {options.warmup:g} s warm-up, then {options.duration:g} s measured, at "
        f"concurrency {concurrency} (calls in flight). h2load spreads them as {connections}.",
        f"- Whole run: {results.seconds / 60:.1f} min.",
        "",
        "## Results",
        "",
        "- **calls/s, p50, p99**: the service through h2load. Percentiles come from h2load's "
        "per-request log; latency is h2load's, so it includes queueing at the client.",
        "- **server CPU µs/call**: the CPU time (user and system, every thread of the server "
        "and of its workers, from /proc) spent during the measured seconds, divided by the calls "
        "completed in them. It includes the server's share of the kernel's socket work, so "
        "it shows what one call costs the machine on the server's side.",
        "- **raw SQL**: the exact statements the service sends for that call (captured from an "
        "in-process call through the service's statement observer), replayed with asyncpg "
        "the way the service runs them (each statement on its own, no transaction) by c "
        "workers, each on its own connection, from one Python process on uvloop (the "
        "service's own event loop). Rows are fetched but not converted to messages.",
        "- **empty RPC**: an empty unary call on a bare grpc.aio server (default asyncio "
        "loop, no interceptor, no database) in its own process, driven by h2load with the "
        "same settings. One figure per concurrency.",
        "- **floor**: a bare grpc.aio server (no interceptor, on uvloop like the service) whose "
        "handler sends the scenario's exact statements through the service's own connection "
        "stack (same pool size, JSON codecs, rows fetched) and returns the service's reply "
        "bytes as they are: no parsing, validation, conversion or logging. Any implementation "
        "of the call on grpc.aio and asyncpg does at least this, so the floor is what this "
        "machine allows the call at all, measured by h2load right after the service's cell.",
        "- **ratio** = service calls/s / min(raw SQL, empty RPC): 1.0 would mean the service "
        "adds nothing to the cheaper of its two unavoidable costs. **floor ratio** is the same "
        "for the floor: no implementation on this stack can be expected above it here. "
        "**service / floor** is what the service's own work (request parsing, validation, "
        "tenancy, statement building, rows to messages, serialization, interceptor) leaves of "
        "the floor.",
        "- **replies**: h2load only counts HTTP statuses, and a gRPC error is HTTP 200, so "
        "every completed call's DATA bytes are checked against the reply size of a correct "
        "call; `ok` means no call can have returned anything else.",
        "",
        table(results),
        "",
        *_floor_summary(results),
        *_empty_cpu(results),
        *_walk(results),
        *_comparison(results),
        *_writers(results),
        *_watch(results),
        DECISIONS.read_text().rstrip("\n"),
        "",
        "## Scenarios",
        "",
        "Each scenario repeats one request body (h2load sends one body). The deep page by token "
        "uses the `next_page_token` of the page before it, fetched by page number, so both deep "
        "scenarios return the same rows. Before and after its cells each scenario is called "
        "once with the generated Python client, checking status OK, the row count and the "
        "reply size.",
        "",
    ]
    for run in results.runs:
        lines += _scenario_details(run)
    if results.failures:
        lines += ["## Failed checks", ""] + [f"- {failure}" for failure in results.failures]
        lines.append("")
    bad = [
        f"{run.scenario.title} at c={cell.concurrency}: {cell.bad_replies:,} of "
        f"{cell.service.done:,}"
        for run in results.runs
        for cell in run.cells
        if cell.bad_replies
    ]
    if bad or results.server_log:
        lines += [
            "## Calls that did not return the expected reply",
            "",
            "Counted from h2load's DATA bytes (see above); the server's log says why:",
            "",
            *(f"- {line}" for line in bad),
            "",
            "| server log line | times |",
            "|---|--:|",
            *(
                f"| {message.replace('|', '/')} | {count:,} |"
                for message, count in sorted(results.server_log.items(), key=lambda i: -i[1])
            ),
            "",
        ]
    return "\n".join(lines)


def _round_down(value: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above `value`."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= value)


def chart(results: Results, path: Path) -> None:
    """Horizontal grouped bars of calls/s per scenario and concurrency, with each cell's raw-SQL
    limit as a diamond and the empty-RPC limit per concurrency as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    runs = [run for run in results.runs if run.cells]
    concurrency = list(results.options.concurrency)
    colors = ["#9ecae1", "#4292c6", "#08519c", "#08306b", "#041c3f"]
    height = 0.8 / len(concurrency)
    figure, axes = plt.subplots(figsize=(11, 1.1 + 0.62 * len(runs) * max(1, len(concurrency) / 3)))
    smallest = float("inf")
    handles: list[Any] = []
    for index, c in enumerate(concurrency):
        offsets = [position - 0.4 + height * (index + 0.5) for position in range(len(runs))]
        values, sql = [], []
        for run in runs:
            cell = next((cell for cell in run.cells if cell.concurrency == c), None)
            values.append(cell.service.calls_per_second if cell else 0.0)
            sql.append(cell.sql.calls_per_second if cell else float("nan"))
        smallest = min([smallest, *(value for value in values if value > 0)])
        color = colors[index % len(colors)]
        handles.append(
            axes.barh(offsets, values, height=height * 0.92, color=color, label=f"service, c={c}")
        )
        for offset, value in zip(offsets, values, strict=True):
            axes.text(value * 1.04, offset, f"{value:,.0f}", va="center", fontsize=7)
        handles.append(
            axes.scatter(
                sql,
                offsets,
                marker="D",
                s=22,
                color=color,
                edgecolors="black",
                linewidths=0.7,
                zorder=3,
                label=f"raw SQL limit, c={c}",
            )
        )
        empty = results.empty.get(c)
        if empty is not None:
            handles.append(
                axes.axvline(
                    empty.calls_per_second,
                    color=color,
                    linestyle="--",
                    linewidth=1.2,
                    label=f"empty RPC limit, c={c} ({empty.calls_per_second:,.0f}/s)",
                )
            )
    axes.set_xscale("log")
    # Bars on a log axis need a fixed base: the power of ten below the slowest cell.
    if smallest != float("inf"):
        axes.set_xlim(left=_round_down(smallest / 1.5))
    axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_yticks(range(len(runs)))
    axes.set_yticklabels([run.scenario.title for run in runs])
    axes.invert_yaxis()
    axes.set_xlabel("calls per second (log scale; more is better)")
    axes.grid(axis="x", which="both", alpha=0.25)
    axes.set_title(
        "SessionMonitoring: calls/s per scenario vs raw-SQL and empty-RPC limits"
        + (" (quick run)" if results.options.quick else "")
    )
    # Handles go in per concurrency, so each legend column is one concurrency.
    axes.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncol=len(concurrency),
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def command_line(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "server.tools.bench", *argv])


def write(results: Results, argv: list[str]) -> tuple[Path, Path]:
    """Write the report and chart into the output folder; returns their paths."""
    output = results.options.output
    output.mkdir(parents=True, exist_ok=True)
    chart_path = output / CHART_NAME
    chart(results, chart_path)
    report_path = output / REPORT_NAME
    report_path.write_text(markdown(results, command_line(argv), CHART_NAME) + "\n")
    return report_path, chart_path
