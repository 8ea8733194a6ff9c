"""Drive gRPC unary calls with h2load and read back throughput, latency percentiles and bytes."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

H2LOAD = "h2load"
INSTALL_HINT = "apt-get install -y nghttp2-client"
# Connections per h2load run; the concurrency is spread over them as streams. A few connections
# (rather than one) let a multi-process server spread them; a gRPC client would also multiplex.
MAX_CONNECTIONS = 4

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_DATA = re.compile(r"\((\d+)\) data")


class H2loadMissingError(RuntimeError):
    """h2load is not installed."""


class H2loadError(RuntimeError):
    """h2load failed or printed something this module cannot read."""


def require_h2load() -> str:
    """The h2load executable, or raise with the command that installs it."""
    path = shutil.which(H2LOAD)
    if path is None:
        raise H2loadMissingError(
            f"h2load not found on PATH: install it with `{INSTALL_HINT}` (Debian/Ubuntu)"
        )
    return path


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag byte, 4-byte big-endian length, bytes."""
    return b"\0" + struct.pack(">I", len(message)) + message


def split_concurrency(concurrency: int) -> tuple[int, int]:
    """(connections, streams per connection) whose product is exactly `concurrency`."""
    connections = math.gcd(concurrency, MAX_CONNECTIONS)
    return connections, concurrency // connections


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One h2load run."""

    done: int
    succeeded: int
    failed: int
    seconds: float
    calls_per_second: float
    data_bytes: int
    p50_ms: float
    p99_ms: float


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_output(text: str, latencies_ms: list[float]) -> LoadResult:
    """Read h2load's summary; `latencies_ms` come from its --log-file."""
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    data = _DATA.search(text)
    if finished is None or requests is None or data is None:
        raise H2loadError(f"unexpected h2load output:\n{text}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies_ms.sort()
    done = int(requests.group(3))
    return LoadResult(
        done=done,
        succeeded=int(requests.group(4)),
        failed=int(requests.group(5)) + int(requests.group(6)) + int(requests.group(7)),
        seconds=seconds,
        calls_per_second=float(finished.group(3)),
        data_bytes=int(data.group(1)),
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
    )


def _prepare(workdir: Path, body: bytes) -> tuple[Path, Path]:
    """Write the body file; remove the previous log (h2load appends to it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    log_file = workdir / "requests.tsv"
    log_file.unlink(missing_ok=True)
    return body_file, log_file


def read_log(path: Path) -> list[float]:
    """Per-request latencies (ms) of the successful requests in an h2load --log-file."""
    latencies: list[float] = []
    if not path.exists():
        return latencies
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] != "-1":
            latencies.append(int(fields[2]) / 1000)
    return latencies


async def run(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float | None = None,
    requests: int | None = None,
    workdir: Path,
) -> LoadResult:
    """POST `body` (already gRPC-framed) to `url` with h2load for `duration` seconds or
    `requests` calls, at `concurrency` calls in flight."""
    body_file, log_file = _prepare(workdir, body)
    connections, streams = split_concurrency(concurrency)
    args = [
        require_h2load(),
        f"--clients={connections}",
        f"--max-concurrent-streams={streams}",
        "--threads=1",
        f"--data={body_file}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--log-file={log_file}",
    ]
    args += [f"--header={name}: {value}" for name, value in headers.items()]
    if duration is not None:
        # Not --warm-up-time: h2load then mixes warm-up bytes into its traffic totals.
        args.append(f"--duration={max(100, round(duration * 1000))}ms")
    else:
        args.append(f"--requests={max(requests or 0, connections)}")
    args.append(url)
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise H2loadError(f"h2load exited with {process.returncode}:\n{text}")
    return parse_output(text, read_log(log_file))
