"""The floor: a bare grpc.aio server whose handler for a scenario sends that scenario's captured
statements through the service's own connection stack and returns the service's reply bytes as
they are, doing nothing else (no parsing, validation, conversion, interceptor or logging).

A call implemented on grpc.aio and asyncpg cannot ask PostgreSQL the same question with less work
than this, so the floor is what any implementation of the call could reach on this machine, and
service / floor is what the service's own Python costs on top.
`python -m server.tools.bench.floor_server --database-url URL --spec FILE` prints its port.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from server.config import load_settings
from server.data.statements import Compiled, Database
from server.runner import run_on_fastest_loop
from server.tools.bench.empty_server import serve_bare

SERVICE = "bench.Floor"


@dataclass(frozen=True, slots=True)
class FloorCall:
    """What the floor does for one scenario: these statements in order, then this reply."""

    statements: Sequence[tuple[str, tuple[Any, ...]]]
    reply: bytes


def path(key: str) -> str:
    """The method path serving scenario `key`."""
    return f"/{SERVICE}/{key}"


def write_spec(spec_path: Path, calls: Mapping[str, FloorCall]) -> None:
    """Hand the calls to a floor server process (a file of this run's own making)."""
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_bytes(pickle.dumps(dict(calls)))


def _compiled(sql: str, arguments: tuple[Any, ...]) -> Compiled:
    names = tuple(f"p{index}" for index in range(len(arguments)))
    return Compiled(sql, names, dict(zip(names, arguments, strict=True)))


Handler = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]


def _handler(database: Database, call: FloorCall) -> Handler:
    statements = [_compiled(sql, arguments) for sql, arguments in call.statements]
    reply = call.reply

    async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        for statement in statements:
            await database.fetch(statement, {})
        return reply

    return handle


def read_spec(spec_path: Path) -> dict[str, FloorCall]:
    """The calls `write_spec` wrote."""
    calls: dict[str, FloorCall] = pickle.loads(spec_path.read_bytes())  # noqa: S301 - our own file
    return calls


async def serve(address: str, database_url: str, calls: Mapping[str, FloorCall]) -> None:
    """Serve `calls` until killed, on a pool sized like the service's."""
    settings = load_settings()
    database = Database(
        database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
    )
    await database.open()
    try:
        await serve_bare(
            address, SERVICE, {key: _handler(database, call) for key, call in calls.items()}
        )
    finally:
        await database.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server.tools.bench.floor_server")
    parser.add_argument("--address", default="127.0.0.1:0")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args()
    # The service's own event loop, so the floor is as fast as the service could be.
    run_on_fastest_loop(serve(args.address, args.database_url, read_spec(args.spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
