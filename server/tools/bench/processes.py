"""The servers under load, each in its own process: the real service, and the bare ones (the
empty RPC, the floor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVER_START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(errors="replace")[-4000:]


async def wait_serving(
    target: str, process: asyncio.subprocess.Process, log: Path | None = None
) -> None:
    """Poll the health service at `target` until it reports SERVING; raise (with the tail of
    `log`) if `process` exits first or it takes too long."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                raise RuntimeError(
                    f"the server exited with {process.returncode} while starting; its log:\n"
                    + _tail(log)
                )
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server at {target} did not report SERVING in time")
            await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


def tree_cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of process `pid` and all its descendants (every thread), or
    None where /proc cannot tell (not Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    if pid not in times:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(times[member] for member in tree) / tick


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A server under load: where to call it, and its process (workers are its children)."""

    target: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """CPU time the server (all its workers and threads) has used so far."""
        return tree_cpu_seconds(self.pid)


@contextlib.asynccontextmanager
async def service_server(
    database_url: str, *, workers: int | None, log: Path, settings: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """Run `python -m server serve` on a free port until the block ends, with `settings`
    (environment variables of server.config) over the defaults."""
    target = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "server", "serve", "--address", target]
    args += ["--database-url", database_url]
    if workers is not None:
        args += ["--workers", str(workers)]
    # Per-call logging would be part of what is measured; warnings still reach the log file.
    env = {**os.environ, "LOG_LEVEL": "WARNING", **(settings or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    try:
        await wait_serving(target, process, log)
        yield ServerProcess(target, process.pid)
    finally:
        await _stop(process)


@contextlib.asynccontextmanager
async def bare_server(module: str, *args: str) -> AsyncIterator[ServerProcess]:
    """Run `python -m module *args` (a bench server that prints its port) until the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=SERVER_START_TIMEOUT)
        if not line.strip().isdigit():
            raise RuntimeError(f"{module} did not print its port")
        yield ServerProcess(f"127.0.0.1:{int(line)}", process.pid)
    finally:
        await _stop(process)
