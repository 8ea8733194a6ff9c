"""The bare-gRPC limit: an empty unary RPC (bytes in, no bytes out) on a plain grpc.aio server
with no interceptor, health or database. `python -m server.bench.empty_server` prints its port."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import grpc

SERVICE = "bench.Empty"
METHOD = "Call"
PATH = f"/{SERVICE}/{METHOD}"


async def _empty(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b""


async def serve(address: str) -> None:
    """Serve until killed, printing the bound port on the first line of stdout."""
    server = grpc.aio.server()
    # No (de)serializers: the handler sees and returns raw bytes, so nothing is parsed.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_empty)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server.bench.empty_server")
    parser.add_argument("--address", default="127.0.0.1:0")
    asyncio.run(serve(parser.parse_args().address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
