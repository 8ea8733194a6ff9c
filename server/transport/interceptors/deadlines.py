"""The call's time limit: when it passes, the handler (and the database work it awaits) is
cancelled and the call ends DEADLINE_EXCEEDED."""

from __future__ import annotations

import asyncio
from typing import Any

from server.transport.errors import DeadlineExceededError
from server.transport.interceptors.chain import Call, Context, Method, Next

# How far ahead of the server's view of a deadline the client's own timer may fire (the request's
# transit): a cancel that close to the deadline is that timer, not the client giving up.
_CLIENT_TIMER_LEAD = 0.05


class Deadline:
    """Bounds a unary call by the caller's deadline or `ceiling` (seconds), whichever is sooner,
    and a streaming call by the caller's deadline alone."""

    def __init__(self, ceiling: float) -> None:
        self._ceiling = ceiling

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that bounds `inner` in time."""
        # A streaming call (a watch) is bounded by the caller's deadline only, never the unary
        # ceiling; each statement it runs stays bounded by the database's statement timeout.
        ceiling = None if method.streaming else self._ceiling

        async def bounded(request: Any, context: Context, call: Call) -> Any:
            remaining: float | None = context.time_remaining()
            if remaining is None:
                budget = ceiling
            elif ceiling is None:
                budget = remaining
            else:
                budget = min(ceiling, remaining)
            scope = asyncio.timeout(budget)
            try:
                async with scope:
                    return await inner(request, context, call)
            except TimeoutError:
                if scope.expired():
                    raise DeadlineExceededError() from None
                raise  # the handler's own TimeoutError: an unexpected failure, not the deadline
            except asyncio.CancelledError:
                # grpc cancels the handler itself at the caller's deadline when its timer (or the
                # client's) beats ours: no status can be sent, but the call still hit its deadline.
                if remaining is not None and context.time_remaining() <= _CLIENT_TIMER_LEAD:
                    call.code = DeadlineExceededError.code
                    call.reason = DeadlineExceededError.reason
                raise

        return bounded
