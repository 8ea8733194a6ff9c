"""What the pieces of the chain share: the per-call facts (`Call`), the method they wrap
(`Method`), the shape of a piece (`Layer`), and how they are composed around a handler.

Every piece wraps the next one as `async (request, context, call) -> response`, the same for
unary and streaming methods: the innermost step turns a streaming handler into a coroutine that
writes each message itself, so a piece never needs to know how the handler answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Metadata = Sequence[tuple[str, str | bytes]]
# What grpc calls: the handler as registered, and the composed chain that replaces it.
Behavior = Callable[[Any, Context], Awaitable[Any]]
# What each piece calls: the rest of the chain.
Next = Callable[[Any, Context, "Call"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """The method a chain is composed for."""

    path: str  # as grpc names it: /package.Service/Method
    name: str  # as the access log and the metrics name it
    request_streaming: bool
    response_streaming: bool

    @property
    def streaming(self) -> bool:
        """Whether messages stream in either direction."""
        return self.request_streaming or self.response_streaming


class Call:
    """One call's facts, shared along the chain: each piece sets what it learns (request id,
    caller, tenant, final code and reason) and the access log and metrics report them."""

    __slots__ = ("caller", "code", "metadata", "notes", "reason", "request_id", "tenant")

    def __init__(self, metadata: Metadata, request_id: str) -> None:
        self.metadata = metadata
        self.request_id = request_id
        self.tenant = "-"
        self.caller = "-"
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.notes: tuple[tuple[str, str], ...] = ()  # what the handler adds to the access line


class Layer(Protocol):
    """One piece of the chain: given a method and the rest of the chain, the step that does this
    piece's job around it. Called once per method; the step it returns runs on every call."""

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step for `method` around `inner` (or `inner` itself when there is nothing to do)."""
        ...


class Entry(Protocol):
    """The outermost piece: starts the call's `Call` and hands it down the chain."""

    def wrap(self, method: Method, inner: Next) -> Behavior:
        """The behavior grpc runs for `method`, calling `inner` with the new `Call`."""
        ...


def compose(
    method: Method, handler: Callable[..., Any], entry: Entry, layers: Sequence[Layer]
) -> Behavior:
    """`handler` inside `layers` (outermost first) inside `entry`: the behavior grpc runs."""
    chain = _handler_step(method, handler)
    for layer in reversed(layers):
        chain = layer.wrap(method, chain)
    return entry.wrap(method, chain)


def first(metadata: Metadata, key: str) -> str | bytes | None:
    """The first value of `key` in the call metadata."""
    for name, value in metadata:  # a plain loop: no generator object per call
        if name == key:
            return value
    return None


def _handler_step(method: Method, handler: Callable[..., Any]) -> Next:
    if inspect.isasyncgenfunction(handler):
        if not method.response_streaming:
            raise TypeError(f"{method.path}: an async generator cannot answer with one message")
        return _writing(handler)
    if not inspect.iscoroutinefunction(handler):
        # The chain awaits the handler; a sync one would need grpc's thread pool.
        raise TypeError(f"{method.path}: handlers must be coroutine or async generator functions")
    behavior = cast(Behavior, handler)
    if method.response_streaming:
        return _writing_itself(behavior)

    # A plain function handing back the handler's coroutine: the piece above awaits it, so a unary
    # call pays no extra coroutine for this step.
    def call_handler(request: Any, context: Context, call: Call) -> Awaitable[Any]:
        return behavior(request, context)

    return call_handler


# In both writers: a write the transport refuses (grpc.aio.InternalError) means the call is over
# for the client (it cancelled or went away), so no status can reach it: the call is cancelled.
def _writing(handler: Callable[..., Any]) -> Next:
    responses = cast(Callable[[Any, Context], AsyncGenerator[Any, None]], handler)

    async def write_each(request: Any, context: Context, call: Call) -> None:
        # aclosing: a cancel landing while a message is written (the generator waits at its
        # yield) closes the generator at once, so the handler's finally runs now, not at GC.
        async with contextlib.aclosing(responses(request, context)) as stream:
            async for response in stream:
                try:
                    await context.write(response)
                except grpc.aio.InternalError as error:
                    raise asyncio.CancelledError() from error

    return write_each


def _writing_itself(behavior: Behavior) -> Next:
    async def handler_writes(request: Any, context: Context, call: Call) -> None:
        try:
            await behavior(request, context)
        except grpc.aio.InternalError as error:
            raise asyncio.CancelledError() from error

    return handler_writes
