"""Every setting of the service: its command-line flag, environment variable, default and help.

`Settings` is the single source; `server.__main__` builds the CLI from it, so `--help` and the
README's configuration table list exactly these. Reading happens only when `load_settings` is
called, never at import.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; each field's alias is its environment variable."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    address: str = Field(
        "127.0.0.1:50051",
        alias="GRPC_ADDRESS",
        description="host:port to serve gRPC on (port 0 picks a free port)",
    )
    database_url: SecretStr | None = Field(
        None,
        alias="DATABASE_URL",
        description="SQLAlchemy URL postgresql+asyncpg://user:pass@host:port/db; unset = embedded",
    )
    database_read_url: SecretStr | None = Field(
        None,
        alias="DATABASE_READ_URL",
        description="optional read replica for ListSessions and GetSessionDetail",
    )
    data_dir: Path = Field(
        Path(".data"),
        alias="SESSIONMONITORING_DATA_DIR",
        description="folder for the embedded PostgreSQL's data (used when DATABASE_URL is unset)",
    )
    db_pool_size: int = Field(
        10, ge=1, le=1000, alias="DB_POOL_SIZE", description="database connections per process"
    )
    db_pool_timeout: float = Field(
        2.0,
        gt=0,
        alias="DB_POOL_TIMEOUT",
        description="seconds a call waits for a free connection before RESOURCE_EXHAUSTED",
    )
    db_connect_timeout: float = Field(
        3.0, gt=0, alias="DB_CONNECT_TIMEOUT", description="seconds to open a database connection"
    )
    grace_period: float = Field(
        10.0,
        ge=0,
        alias="GRACE_PERIOD",
        description="seconds in-flight calls may take to finish after SIGTERM/SIGINT",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="LOG_LEVEL", description="minimum level of log lines"
    )
    log_format: Literal["text", "json"] = Field(
        "text", alias="LOG_FORMAT", description="log line format: readable text or one JSON object"
    )
    access_log: bool = Field(
        True, alias="ACCESS_LOG", description="log one line per call (method, tenant, code, ...)"
    )
    metrics_address: str | None = Field(
        None,
        alias="METRICS_ADDRESS",
        description="host:port for the Prometheus /metrics endpoint; unset = no endpoint",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        alias="WORKERS",
        description="server processes sharing the port (SO_REUSEPORT), each with its own pool",
    )
    max_concurrent_rpcs: int = Field(
        256,
        ge=1,
        alias="MAX_CONCURRENT_RPCS",
        description="unary calls served at once per process; more get RESOURCE_EXHAUSTED "
        "(watch streams count apart; health and reflection are never refused)",
    )
    watch_max_streams: int = Field(
        4096,
        ge=1,
        alias="WATCH_MAX_STREAMS",
        description="watch streams open at once per process; more get RESOURCE_EXHAUSTED",
    )
    max_request_bytes: int = Field(
        65536, ge=1024, alias="MAX_REQUEST_BYTES", description="largest request message accepted"
    )
    default_deadline: float = Field(
        30.0,
        gt=0,
        alias="DEFAULT_DEADLINE",
        description="seconds a call may run when the caller sets no deadline (also the ceiling)",
    )
    health_check_interval: float = Field(
        2.0,
        gt=0,
        alias="HEALTH_CHECK_INTERVAL",
        description="seconds between database probes that drive grpc.health.v1 status",
    )
    counter_fold_interval: float = Field(
        0.02,
        gt=0,
        alias="COUNTER_FOLD_INTERVAL",
        description="seconds between folds of the writers' changes into the counters and the "
        "watch's change log (a watch event is at most this late)",
    )
    watch_retention: float = Field(
        3600.0,
        gt=0,
        alias="WATCH_RETENTION",
        description="seconds of change history kept: a watch resumes from a token this old",
    )
    watch_bookmark_interval: float = Field(
        15.0,
        gt=0,
        alias="WATCH_BOOKMARK_INTERVAL",
        description="seconds without an event after which a watch stream gets a BOOKMARK",
    )
    watch_max_age: float = Field(
        1800.0,
        gt=0,
        alias="WATCH_MAX_AGE",
        description="seconds after which a watch stream ends (OK, after a last BOOKMARK)",
    )
    watch_buffer: int = Field(
        1000,
        ge=1,
        alias="WATCH_BUFFER",
        description="changes a watch stream may fall behind before it ends RESOURCE_EXHAUSTED",
    )
    watch_initial_idle_timeout: float = Field(
        10.0,
        gt=0,
        alias="WATCH_INITIAL_IDLE_TIMEOUT",
        description="seconds a client may take over each 500 sessions of a send_initial set "
        "before its stream ends RESOURCE_EXHAUSTED (the snapshot's transaction is ended)",
    )
    watch_poll_interval: float = Field(
        1.0,
        gt=0,
        alias="WATCH_POLL_INTERVAL",
        description="seconds between reads of the change log when no NOTIFY woke the reader",
    )
    tls_cert_file: FilePath | None = Field(
        None, alias="TLS_CERT_FILE", description="PEM server certificate chain; enables TLS"
    )
    tls_key_file: FilePath | None = Field(
        None, alias="TLS_KEY_FILE", description="PEM private key of the server certificate"
    )
    tls_client_ca_file: FilePath | None = Field(
        None,
        alias="TLS_CLIENT_CA_FILE",
        # grpcio can require client certificates or not ask for them; it has no "ask but do not
        # require" mode, so mutual TLS here always means "required".
        description="PEM CA bundle for client certificates; enables (required) mutual TLS",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP/gRPC collector for traces (http://host:4317): a span per call, its "
        "SQL statements as children; unset = tracing off",
    )
    caller_policy_file: FilePath | None = Field(
        None,
        alias="CALLER_POLICY_FILE",
        description="TOML file mapping callers (certificate or token) to tenants; unset = off",
    )

    @field_validator("address", "metrics_address")
    @classmethod
    def _is_host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            check_address(value)
        return value

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @property
    def tls_enabled(self) -> bool:
        """Whether the server listens with TLS."""
        return self.tls_cert_file is not None


def check_address(address: str) -> None:
    """Raise ValueError unless `address` is host:port (a name, an IPv4 address or a bracketed
    IPv6 one, and a port 0 to 65535) or unix:PATH, as gRPC listens on."""
    if address.startswith("unix:") and len(address) > len("unix:"):
        return
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be HOST:PORT with a port from 0 to 65535, or unix:PATH")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 host must be in brackets, e.g. [::1]:50051")
        ipaddress.IPv6Address(host[1:-1])  # its ValueError says what is wrong
    elif ":" in host or not all(c.isascii() and (c.isalnum() or c in "-._") for c in host):
        raise ValueError(f"{host!r} is not a host name or address")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; `overrides` (command-line flags) take precedence."""
    return Settings(**overrides)
