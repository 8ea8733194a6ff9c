"""How many calls a process serves at once: unary calls and streams counted apart, so open
watches never crowd out calls (health and reflection are outside the chain: never refused)."""

from __future__ import annotations

from typing import Any

from server.transport.errors import ServerBusyError
from server.transport.interceptors.chain import Call, Context, Method, Next


class Concurrency:
    """Refuses a call RESOURCE_EXHAUSTED while `calls` unary calls (or `streams` streaming
    calls, for a streaming method) are in flight."""

    def __init__(self, *, calls: int, streams: int) -> None:
        self._limits = {False: calls, True: streams}
        self._in_flight = {False: 0, True: 0}

    def in_flight(self, *, streaming: bool) -> int:
        """Calls of that kind in flight now."""
        return self._in_flight[streaming]

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that admits `inner` while there is room for it."""
        streaming = method.streaming
        limit = self._limits[streaming]
        in_flight = self._in_flight

        async def admitted(request: Any, context: Context, call: Call) -> Any:
            if in_flight[streaming] >= limit:
                raise ServerBusyError()
            in_flight[streaming] += 1
            try:
                return await inner(request, context, call)
            finally:
                in_flight[streaming] -= 1

        return admitted
