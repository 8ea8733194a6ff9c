"""Every setting of the service: its command-line flag, environment variable, default and help.

`Settings` is the single source; `server.__main__` builds the CLI from it, so `--help` and the
README's configuration table list exactly these. Reading happens only when `load_settings` is
called, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
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
    data_dir: Path = Field(
        Path(".data"),
        alias="SESSIONMONITORING_DATA_DIR",
        description="folder for the embedded PostgreSQL's data (used when DATABASE_URL is unset)",
    )
    demo_data: bool = Field(
        True,
        alias="SESSIONMONITORING_DEMO_DATA",
        description="load the demo tenant into an empty embedded database",
    )
    db_pool_size: int = Field(
        10, ge=1, le=1000, alias="DB_POOL_SIZE", description="database connections per process"
    )
    db_pool_timeout: float = Field(
        2.0,
        gt=0,
        alias="DB_POOL_TIMEOUT",
        description="seconds a call waits for a free connection before UNAVAILABLE",
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


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; `overrides` (command-line flags) take precedence."""
    return Settings(**overrides)
