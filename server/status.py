"""Status rules: how stored metadata maps to a session's status and end time.

The write side of these rules (stamp `endTime` once, clear it on reactivation) runs inside the
single UPDATE statement in `repository`, so it is atomic; this module owns the read side and the
vocabulary shared by both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

ACTIVE: Final = "active"
CLOSED: Final = "closed"
EXPIRED: Final = "expired"
STORED_STATUSES: Final = (ACTIVE, CLOSED, EXPIRED)
TERMINAL_STATUSES: Final = (CLOSED, EXPIRED)


def stored_status(metadata: Any) -> str:
    """The status a session displays, computed exactly as EFFECTIVE_STATUS_SQL does.

    `metadata ->> 'status'`: text as is, other JSON values as their JSON text, and `active` when
    the key is absent, null, or the metadata is not an object.
    """
    if not isinstance(metadata, dict):
        return ACTIVE
    value = metadata.get("status")
    if value is None:
        return ACTIVE
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def end_time(metadata: Any) -> datetime | None:
    """The metadata `endTime` as an aware UTC datetime, or None when absent or unparseable.

    Naive times are taken as UTC: the previous API wrote them that way.
    """
    if not isinstance(metadata, dict):
        return None
    value = metadata.get("endTime")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_end_time(moment: datetime) -> str:
    """The `endTime` text this service writes: ISO-8601 in UTC with a `Z` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def accepts_status_update(metadata: Any) -> bool:
    """Whether a status can be merged into `metadata` without overwriting it (null counts as {})."""
    return metadata is None or isinstance(metadata, dict)
