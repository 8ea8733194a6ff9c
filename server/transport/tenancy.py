"""The tenant a call acts for: where it comes from and what a valid tenant id looks like."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextvars import ContextVar, Token

from server.transport.errors import InvalidTenantError, MissingTenantError

TENANT_METADATA_KEY = "x-tenant-id"
TENANT_ID_MAX_LENGTH = 128
# Letters, digits and `. _ : -`: enough for slugs, UUIDs and URNs, and safe to log verbatim.
TENANT_ID_PATTERN = re.compile(rf"[A-Za-z0-9._:-]{{1,{TENANT_ID_MAX_LENGTH}}}")


def tenant_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """Return the validated tenant id carried by the call metadata, or raise a tenant error."""
    values: list[str | bytes] = []
    for key, value in metadata or ():
        if key == TENANT_METADATA_KEY:
            values.append(value)
        elif key == f"{TENANT_METADATA_KEY}-bin":
            raise InvalidTenantError(f"send the tenant as text metadata {TENANT_METADATA_KEY!r}")
    if not values:
        raise MissingTenantError()
    if len(values) > 1:
        raise InvalidTenantError(f"{TENANT_METADATA_KEY} must be sent once, got {len(values)}")
    value = values[0]
    if isinstance(value, bytes):  # gRPC only hands bytes for -bin keys; refuse rather than guess
        raise InvalidTenantError(f"{TENANT_METADATA_KEY} must be text")
    if value == "":
        raise MissingTenantError()
    if not TENANT_ID_PATTERN.fullmatch(value):
        raise InvalidTenantError(
            f"{TENANT_METADATA_KEY} must be 1-{TENANT_ID_MAX_LENGTH} characters from "
            "A-Z a-z 0-9 . _ : -"
        )
    return value


_current_tenant: ContextVar[str] = ContextVar("current_tenant")


def current_tenant() -> str:
    """The tenant of the call being served (set by the interceptor before the handler runs)."""
    return _current_tenant.get()


def bind_tenant(tenant_id: str) -> Token[str]:
    """Make `tenant_id` the current tenant until the returned token is reset."""
    return _current_tenant.set(tenant_id)


def unbind_tenant(token: Token[str]) -> None:
    """Restore the tenant that was current before `bind_tenant`."""
    _current_tenant.reset(token)
