"""What a session list may be filtered by, once validated (pure: the transport builds it, the
data layer turns it into SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SessionFilters:
    """Stored status, inclusive created-time bounds, channel; None is no filter."""

    status: str | None
    created_from: datetime | None
    created_to: datetime | None
    channel_type: str | None


class Position(Protocol):
    """Where a keyset page resumes: after the row with this created-time sort key
    (server.domain.time_keys) and tie-break (a session id, or a message id as text)."""

    @property
    def created_key(self) -> int:
        """The stored created time's sort key of the last row already returned."""

    @property
    def key(self) -> str:
        """That row's unique tie-break."""
