"""The bare-gRPC limit: an empty unary RPC (bytes in, no bytes out) on a plain grpc.aio server
with no interceptor, health or database. `python -m server.tools.bench.empty_server` prints its
port."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any

import grpc

SERVICE = "bench.Empty"
METHOD = "Call"
PATH = f"/{SERVICE}/{METHOD}"


async def _empty(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b""


async def serve_bare(address: str, service: str, handlers: Mapping[str, Any]) -> None:
    """Serve raw-bytes unary `handlers` (method name -> coroutine function) on a plain grpc.aio
    server until killed, printing the bound port on the first line of stdout."""
    server = grpc.aio.server()
    # No (de)serializers: handlers see and return raw bytes, so nothing is parsed.
    generic = grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(handler)
            for method, handler in handlers.items()
        },
    )
    server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port(address)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server.tools.bench.empty_server")
    parser.add_argument("--address", default="127.0.0.1:0")
    asyncio.run(serve_bare(parser.parse_args().address, SERVICE, {METHOD: _empty}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
