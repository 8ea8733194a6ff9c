"""The channel's retry policy, as a gRPC service config (the `grpc.service_config` channel
option): gRPC itself retries, with exponential backoff and jitter, within the call's deadline,
and only while no response has begun, so a retry never duplicates a delivered answer.

What is retried, and why:

- UNAVAILABLE only: the server could not be reached, was restarting or draining, or could not
  reach PostgreSQL (reason DATABASE_UNAVAILABLE). Each is usually over in well under a second.
- Not RESOURCE_EXHAUSTED, although DATABASE_BUSY invites a retry: the server already waited its
  pool timeout (2 s by default) for a connection, so retrying at once adds load to a server that
  is saturated, and the same code also means "too many calls in flight" (retries amplify the
  overload) and "request too large" (never succeeds). A retry policy sees only the code, not the
  reason; callers that want to wait out DATABASE_BUSY catch ResourceExhaustedError and back off.
- Not ABORTED (the server already retried its conflicting update 3 times), not
  DEADLINE_EXCEEDED (the deadline covers every attempt), nor anything a repeat cannot change.

retryThrottling stops retries altogether while most calls of the channel fail, so a caller fleet
does not multiply the load on a server that is down.
"""

from __future__ import annotations

import json
from typing import Any

SERVICE = "sessionmonitoring.v1.SessionMonitoring"

# Reads: retrying repeats a query, nothing else.
IDEMPOTENT_READS = ("ListSessions", "GetSessionDetail")
# Retried too: a repeat of an applied status update is a no-op that returns the same session.
IDEMPOTENT_WRITES = ("UpdateSessionStatus",)

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,  # gRPC caps it at 5
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

RETRY_THROTTLING: dict[str, Any] = {"maxTokens": 10, "tokenRatio": 0.1}


def service_config(*, retry: bool = True) -> dict[str, Any]:
    """The service config the client's channel uses: the retry policy on every RPC, or none."""
    if not retry:
        return {}
    methods = (*IDEMPOTENT_READS, *IDEMPOTENT_WRITES)
    return {
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": method} for method in methods],
                "retryPolicy": RETRY_POLICY,
            }
        ],
        "retryThrottling": RETRY_THROTTLING,
    }


def service_config_json(*, retry: bool = True) -> str:
    """`service_config`, as the `grpc.service_config` channel option takes it."""
    return json.dumps(service_config(retry=retry))
