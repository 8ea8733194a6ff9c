"""The request id: taken from the caller (or made), on every log line of the call and in its
trailing metadata."""

from __future__ import annotations

from typing import Any, cast

from server.observability import REQUEST_ID_METADATA_KEY, bind_request_id, request_id_from
from server.transport.interceptors.chain import (
    Behavior,
    Call,
    Context,
    Metadata,
    Method,
    Next,
    first,
)


class RequestIds:
    """The entry of the chain: starts the call's `Call` with its request id."""

    def wrap(self, method: Method, inner: Next) -> Behavior:
        """The behavior grpc runs for `method`."""

        async def with_request_id(request: Any, context: Context) -> Any:
            metadata = cast(Metadata, context.invocation_metadata() or ())
            request_id = request_id_from(first(metadata, REQUEST_ID_METADATA_KEY))
            bind_request_id(request_id)
            # A failed call's status replaces these trailers; error mapping repeats the id there.
            context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
            return await inner(request, context, Call(metadata, request_id))

        return with_request_id
