"""Migrations refuse a PostgreSQL older than 15 with one clear sentence (the suite's own
servers, 15 and 18, are accepted by every migration run)."""

from __future__ import annotations

import pytest

from server.data.migrate import UnsupportedServerError, check_server_version


@pytest.mark.parametrize("version", [90624, 120022, 140013, 149999])
def test_a_server_older_than_15_is_refused(version: int) -> None:
    with pytest.raises(UnsupportedServerError, match="PostgreSQL 15 or newer is required"):
        check_server_version(version)


def test_the_refusal_names_the_server_version() -> None:
    with pytest.raises(UnsupportedServerError, match=r"this server is 14\.13$"):
        check_server_version(140013)


@pytest.mark.parametrize("version", [150000, 150019, 180006])
def test_15_and_newer_are_accepted(version: int) -> None:
    check_server_version(version)
