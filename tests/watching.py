"""A WatchSessions client for tests: a stream read in the background into a queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from tests.factories import tenant_metadata

WAIT = 10.0  # seconds an expected event may take (a fold and a read, on a loaded machine)


class Watch:
    """One open stream: `events` collects what it sent (bookmarks included), `error` how it
    ended when it failed, `ended` when it ended at all."""

    def __init__(
        self, stub: pb_grpc.SessionMonitoringStub, tenant_id: str, request: pb.WatchSessionsRequest
    ) -> None:
        self._call = stub.WatchSessions(request, metadata=tenant_metadata(tenant_id))
        self.events: list[pb.WatchSessionsResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self._call:
                async with self._changed:
                    self.events.append(response)
                    self._changed.notify_all()
        except grpc.aio.AioRpcError as error:
            self.error = error
        finally:
            self.ended.set()
            async with self._changed:
                self._changed.notify_all()

    @property
    def changes(self) -> list[pb.WatchSessionsResponse]:
        """The events but bookmarks."""
        return [event for event in self.events if event.type != pb.WATCH_EVENT_TYPE_BOOKMARK]

    async def until(
        self, done: Callable[[list[pb.WatchSessionsResponse]], bool], within: float = WAIT
    ) -> list[pb.WatchSessionsResponse]:
        """Wait until `done(events)` holds (or the stream ended); the events so far."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: done(self.events) or self.ended.is_set())
        assert done(self.events), f"stream ended first ({self.error}): {self.events}"
        return self.events

    async def changes_count(
        self, count: int, within: float = WAIT
    ) -> list[pb.WatchSessionsResponse]:
        """Wait for `count` events but bookmarks; those events."""
        await self.until(
            lambda events: sum(e.type != pb.WATCH_EVENT_TYPE_BOOKMARK for e in events) >= count,
            within,
        )
        return self.changes

    async def close(self) -> None:
        """Cancel the stream."""
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def watching(
    stub: pb_grpc.SessionMonitoringStub, tenant_id: str, **request: object
) -> AsyncIterator[Watch]:
    """A stream for the duration of the block, which begins once the server has subscribed it
    (its first BOOKMARK, or the end of its initial set)."""
    watch = Watch(stub, tenant_id, pb.WatchSessionsRequest(**request))  # type: ignore[arg-type]
    try:
        await watch.until(
            lambda events: any(e.type == pb.WATCH_EVENT_TYPE_BOOKMARK for e in events)
        )
        yield watch
    finally:
        await watch.close()
