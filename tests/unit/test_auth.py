"""The caller policy: validating the policy file, identifying callers, the tenants they may use."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from server.transport.auth import Caller, CallerPolicy, PolicyError, load_policy
from server.transport.errors import REASON_UNAUTHENTICATED, UnauthenticatedError

TOKEN = "s3cr3t-" + secrets.token_hex(16)
OTHER_TOKEN = "0ther-" + secrets.token_hex(16)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write(tmp_path: Path, toml: str) -> Path:
    path = tmp_path / "callers.toml"
    path.write_text(toml)
    return path


def _load(tmp_path: Path, toml: str) -> CallerPolicy:
    return load_policy(_write(tmp_path, toml))


def _load_error(tmp_path: Path, toml: str) -> str:
    path = _write(tmp_path, toml)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    message = str(raised.value)
    assert str(path) in message
    assert "\n" not in message
    return message


@pytest.fixture
def policy(tmp_path: Path) -> CallerPolicy:
    return _load(
        tmp_path,
        f"""
[[callers]]
name = "billing"
certificate_identities = ["billing.internal", "billing-cn"]
tenants = ["acme", "globex"]

[[callers]]
name = "ops-dashboard"
token_sha256 = ["{_sha256(TOKEN)}"]
tenants = ["*"]

[[callers]]
name = "reports"
token_sha256 = ["{_sha256(OTHER_TOKEN)}"]
certificate_identities = ["reports.internal"]
tenants = ["acme"]
""",
    )


# --- identify ----------------------------------------------------------------------------------


def test_a_known_bearer_token_identifies_its_caller(policy: CallerPolicy) -> None:
    caller = policy.identify(authorization=f"Bearer {TOKEN}", identities=())
    assert caller == Caller("ops-dashboard", frozenset({"*"}))


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_matched_case_insensitively(policy: CallerPolicy, scheme: str) -> None:
    assert policy.identify(authorization=f"{scheme} {TOKEN}", identities=()).name == (
        "ops-dashboard"
    )


def test_a_certificate_identity_identifies_its_caller(policy: CallerPolicy) -> None:
    caller = policy.identify(authorization=None, identities=["billing-cn"])
    assert caller == Caller("billing", frozenset({"acme", "globex"}))


def test_any_listed_identity_of_the_certificate_identifies_the_caller(
    policy: CallerPolicy,
) -> None:
    # A certificate whose CN is unknown but whose SAN is listed.
    caller = policy.identify(
        authorization=None, identities=["host-17", "node17.example", "billing.internal"]
    )
    assert caller.name == "billing"


def test_a_bearer_token_takes_precedence_over_the_certificate(policy: CallerPolicy) -> None:
    caller = policy.identify(authorization=f"Bearer {TOKEN}", identities=["billing.internal"])
    assert caller.name == "ops-dashboard"


def test_an_unknown_token_is_not_rescued_by_a_known_certificate(policy: CallerPolicy) -> None:
    with pytest.raises(UnauthenticatedError) as raised:
        policy.identify(authorization="Bearer nope", identities=["billing.internal"])
    assert raised.value.reason == REASON_UNAUTHENTICATED


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer " + secrets.token_hex(16), id="unknown-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param(f"Basic {TOKEN}", id="basic-scheme"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param(f"Bearer{TOKEN}", id="no-space"),
        pytest.param("", id="empty"),
    ],
)
def test_an_unknown_or_malformed_authorization_is_unauthenticated(
    policy: CallerPolicy, authorization: str
) -> None:
    with pytest.raises(UnauthenticatedError) as raised:
        policy.identify(authorization=authorization, identities=())
    assert raised.value.reason == REASON_UNAUTHENTICATED


def test_a_certificate_not_in_the_policy_is_unauthenticated(policy: CallerPolicy) -> None:
    with pytest.raises(UnauthenticatedError) as raised:
        policy.identify(authorization=None, identities=["stranger.internal", "stranger"])
    assert raised.value.reason == REASON_UNAUTHENTICATED


def test_a_call_without_credentials_is_unauthenticated(policy: CallerPolicy) -> None:
    with pytest.raises(UnauthenticatedError) as raised:
        policy.identify(authorization=None, identities=())
    assert raised.value.reason == REASON_UNAUTHENTICATED


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"],
)
def test_the_token_never_appears_in_an_authentication_error(
    policy: CallerPolicy, authorization: str
) -> None:
    with pytest.raises(UnauthenticatedError) as raised:
        policy.identify(authorization=authorization, identities=())
    assert TOKEN not in str(raised.value)
    assert TOKEN not in repr(raised.value)
    assert all(TOKEN not in value for value in raised.value.metadata.values())


def test_token_hashes_in_the_file_match_whatever_their_case(tmp_path: Path) -> None:
    upper = _load(
        tmp_path,
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN).upper()}"]\ntenants = ["x"]\n',
    )
    assert upper.identify(authorization=f"Bearer {TOKEN}", identities=()).name == "a"


def test_surrounding_spaces_around_the_token_are_ignored(policy: CallerPolicy) -> None:
    assert policy.identify(authorization=f"Bearer   {TOKEN}  ", identities=()).name == (
        "ops-dashboard"
    )


# --- may_act_for -------------------------------------------------------------------------------


def test_a_caller_may_act_for_its_listed_tenants_only() -> None:
    caller = Caller("billing", frozenset({"acme", "globex"}))
    assert caller.may_act_for("acme")
    assert caller.may_act_for("globex")
    assert not caller.may_act_for("initech")
    # Tenant ids are exact: no prefix or case folding may widen a grant.
    assert not caller.may_act_for("acme2")
    assert not caller.may_act_for("ACME")


def test_a_wildcard_caller_may_act_for_every_tenant() -> None:
    caller = Caller("ops", frozenset({"*"}))
    assert caller.may_act_for("acme")
    assert caller.may_act_for("t-" + secrets.token_hex(8))


def test_a_literal_star_tenant_id_is_not_granted_by_a_listed_tenant() -> None:
    assert not Caller("billing", frozenset({"acme"})).may_act_for("*")


# --- load_policy validation --------------------------------------------------------------------


def test_a_missing_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(path) in str(raised.value)


def test_invalid_toml_is_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "[[callers]\nname = ")
    assert "TOML" in message


def test_an_unknown_caller_key_is_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path,
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN)}"]\ntenants = ["x"]\n'
        'role = "admin"\n',
    )
    assert "role" in message


def test_an_unknown_top_level_key_is_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path,
        f'default_tenants = ["x"]\n[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN)}"]\n'
        'tenants = ["x"]\n',
    )
    assert "default_tenants" in message


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param("ab" * 31, id="too-short"),
        pytest.param("ab" * 33, id="too-long"),
        pytest.param("zz" * 32, id="not-hex"),
        pytest.param("", id="empty"),
    ],
)
def test_a_token_hash_that_is_not_a_sha256_hex_digest_is_a_policy_error(
    tmp_path: Path, digest: str
) -> None:
    message = _load_error(
        tmp_path, f'[[callers]]\nname = "a"\ntoken_sha256 = ["{digest}"]\ntenants = ["x"]\n'
    )
    assert "token_sha256" in message


def test_a_raw_token_pasted_as_a_hash_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path, f'[[callers]]\nname = "a"\ntoken_sha256 = ["{TOKEN}"]\ntenants = ["x"]\n'
    )
    assert TOKEN not in message


def test_a_token_in_broken_toml_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    message = _load_error(tmp_path, f'[[callers]]\nname = "a"\ntoken_sha256 = ["{TOKEN}\n')
    assert TOKEN not in message


def test_a_caller_without_credentials_is_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '[[callers]]\nname = "nobody"\ntenants = ["x"]\n')
    assert "nobody" in message


def test_a_caller_with_empty_credential_lists_is_a_policy_error(tmp_path: Path) -> None:
    _load_error(
        tmp_path,
        '[[callers]]\nname = "a"\ncertificate_identities = []\ntoken_sha256 = []\n'
        'tenants = ["x"]\n',
    )


def test_duplicate_caller_names_are_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path,
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN)}"]\ntenants = ["x"]\n'
        '[[callers]]\nname = "a"\ncertificate_identities = ["a.internal"]\ntenants = ["y"]\n',
    )
    assert "unique" in message


def test_a_certificate_identity_listed_for_two_callers_is_a_policy_error(tmp_path: Path) -> None:
    _load_error(
        tmp_path,
        '[[callers]]\nname = "a"\ncertificate_identities = ["shared.internal"]\ntenants = ["x"]\n'
        '[[callers]]\nname = "b"\ncertificate_identities = ["shared.internal"]\ntenants = ["y"]\n',
    )


def test_a_token_hash_listed_for_two_callers_is_a_policy_error(tmp_path: Path) -> None:
    # Otherwise the token silently gets one of the two grants, whichever is listed last.
    _load_error(
        tmp_path,
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN)}"]\ntenants = ["x"]\n'
        f'[[callers]]\nname = "b"\ntoken_sha256 = ["{_sha256(TOKEN).upper()}"]\ntenants = ["y"]\n',
    )


@pytest.mark.parametrize(
    "toml",
    [
        pytest.param("", id="empty-file"),
        pytest.param("callers = []\n", id="no-callers"),
    ],
)
def test_a_policy_without_callers_is_a_policy_error(tmp_path: Path, toml: str) -> None:
    _load_error(tmp_path, toml)


@pytest.mark.parametrize(
    "tenants",
    [
        pytest.param("[]", id="no-tenants"),
        pytest.param('["has space"]', id="invalid-tenant-id"),
        pytest.param('["acme*"]', id="partial-wildcard"),
    ],
)
def test_a_caller_with_invalid_tenants_is_a_policy_error(tmp_path: Path, tenants: str) -> None:
    message = _load_error(
        tmp_path,
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_sha256(TOKEN)}"]\ntenants = {tenants}\n',
    )
    assert "tenants" in message


def test_a_caller_without_a_name_is_a_policy_error(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path, f'[[callers]]\ntoken_sha256 = ["{_sha256(TOKEN)}"]\ntenants = ["x"]\n'
    )
    assert "name" in message
