"""Tenant extraction from call metadata: missing, repeated, binary, malformed and valid ids."""

from __future__ import annotations

import uuid

import pytest

from server.transport import tenancy
from server.transport.errors import (
    REASON_INVALID_TENANT_ID,
    REASON_MISSING_TENANT_ID,
    InvalidTenantError,
    MissingTenantError,
)
from server.transport.tenancy import TENANT_METADATA_KEY, tenant_from_metadata


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(None, id="no-metadata"),
        pytest.param([], id="empty-metadata"),
        pytest.param([("x-tenant", "t"), ("tenant-id", "t")], id="other-keys-only"),
        pytest.param([(TENANT_METADATA_KEY, "")], id="empty-value"),
    ],
)
def test_a_call_without_a_tenant_id_is_missing_its_tenant(
    metadata: list[tuple[str, str | bytes]] | None,
) -> None:
    with pytest.raises(MissingTenantError) as error:
        tenant_from_metadata(metadata)
    assert error.value.reason == REASON_MISSING_TENANT_ID


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([(TENANT_METADATA_KEY, "a"), (TENANT_METADATA_KEY, "a")], id="same-twice"),
        pytest.param([(TENANT_METADATA_KEY, "a"), (TENANT_METADATA_KEY, "b")], id="two-tenants"),
        pytest.param([(TENANT_METADATA_KEY, ""), (TENANT_METADATA_KEY, "a")], id="empty-and-one"),
        pytest.param([(f"{TENANT_METADATA_KEY}-bin", b"a")], id="binary-key-only"),
        pytest.param(
            [(TENANT_METADATA_KEY, "a"), (f"{TENANT_METADATA_KEY}-bin", b"b")],
            id="binary-key-beside-text-key",
        ),
        pytest.param([(TENANT_METADATA_KEY, b"a")], id="bytes-value"),
        pytest.param([(TENANT_METADATA_KEY, "t" * 129)], id="too-long"),
        pytest.param([(TENANT_METADATA_KEY, "a b")], id="space"),
        pytest.param([(TENANT_METADATA_KEY, "a/b")], id="slash"),
        pytest.param([(TENANT_METADATA_KEY, "tenant\n")], id="trailing-newline"),
        pytest.param([(TENANT_METADATA_KEY, " tenant")], id="leading-space"),
        pytest.param([(TENANT_METADATA_KEY, "tenänt")], id="non-ascii-letter"),
        pytest.param([(TENANT_METADATA_KEY, "a'; drop")], id="quote"),
        pytest.param([(TENANT_METADATA_KEY, "a%20b")], id="percent"),
    ],
)
def test_a_malformed_tenant_id_is_invalid(metadata: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(InvalidTenantError) as error:
        tenant_from_metadata(metadata)
    assert error.value.reason == REASON_INVALID_TENANT_ID


@pytest.mark.parametrize(
    "tenant_id",
    [
        str(uuid.UUID("6f1c1a58-8a8e-4c8b-9d55-2a3b4c5d6e7f")),
        "acme",
        "urn:tenant:acme.eu_1",
        "T" * tenancy.TENANT_ID_MAX_LENGTH,
        "0",
    ],
)
def test_a_well_formed_tenant_id_is_returned_as_sent(tenant_id: str) -> None:
    metadata: list[tuple[str, str | bytes]] = [
        ("user-agent", "grpc-python"),
        (TENANT_METADATA_KEY, tenant_id),
        ("x-request-id", "r-1"),
    ]
    assert tenant_from_metadata(metadata) == tenant_id


def test_the_bound_tenant_is_current_until_unbound() -> None:
    outer = tenancy.bind_tenant("outer")
    try:
        inner = tenancy.bind_tenant("inner")
        assert tenancy.current_tenant() == "inner"
        tenancy.unbind_tenant(inner)
        assert tenancy.current_tenant() == "outer"
    finally:
        tenancy.unbind_tenant(outer)
