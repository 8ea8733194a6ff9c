"""Caller authorization: who is calling (mTLS identity or bearer token) and which tenants it may
act for. Off unless a policy file is configured.

Policy file (TOML):

    [[callers]]
    name = "billing"                                  # shown in logs
    certificate_identities = ["billing.internal"]     # client certificate subject CN or SAN
    tenants = ["acme", "globex"]

    [[callers]]
    name = "ops-dashboard"
    token_sha256 = ["<hex sha256 of the bearer token>"]
    tenants = ["*"]                                   # every tenant

Tokens are stored only as SHA-256 hashes and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.transport.errors import UnauthenticatedError
from server.transport.tenancy import TENANT_ID_PATTERN

ALL_TENANTS = "*"
AUTHORIZATION_METADATA_KEY = "authorization"
_BEARER = "bearer "


class PolicyError(ValueError):
    """Raised when the caller policy file is missing, unreadable or invalid."""


class CallerEntry(BaseModel):
    """One caller of the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    certificate_identities: tuple[str, ...] = ()
    token_sha256: tuple[str, ...] = ()
    tenants: tuple[str, ...] = Field(min_length=1)

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError("token_sha256 entries must be 64 hex characters")
        return tuple(digest.lower() for digest in value)

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tenant in value:
            if tenant != ALL_TENANTS and not TENANT_ID_PATTERN.fullmatch(tenant):
                raise ValueError(f"invalid tenant id {tenant!r}")
        return value

    @model_validator(mode="after")
    def _has_a_credential(self) -> CallerEntry:
        if not self.certificate_identities and not self.token_sha256:
            raise ValueError(f"caller {self.name!r} needs certificate_identities or token_sha256")
        return self


class PolicyFile(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callers: tuple[CallerEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PolicyFile:
        names = [caller.name for caller in self.callers]
        if len(names) != len(set(names)):
            raise ValueError("caller names must be unique")
        identities = [i for caller in self.callers for i in caller.certificate_identities]
        if len(identities) != len(set(identities)):
            raise ValueError("a certificate identity may belong to one caller only")
        digests = [d for caller in self.callers for d in caller.token_sha256]
        if len(digests) != len(set(digests)):
            raise ValueError("a token hash may belong to one caller only")
        return self


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified caller and the tenants it may act for."""

    name: str
    tenants: frozenset[str]

    def may_act_for(self, tenant_id: str) -> bool:
        """Whether this caller may read and write `tenant_id`'s sessions."""
        return ALL_TENANTS in self.tenants or tenant_id in self.tenants


class CallerPolicy:
    """Identifies callers from their credentials."""

    def __init__(self, policy: PolicyFile) -> None:
        self._by_identity = {
            identity: Caller(entry.name, frozenset(entry.tenants))
            for entry in policy.callers
            for identity in entry.certificate_identities
        }
        self._tokens = [
            (bytes.fromhex(digest), Caller(entry.name, frozenset(entry.tenants)))
            for entry in policy.callers
            for digest in entry.token_sha256
        ]

    def identify(self, *, authorization: str | None, identities: Sequence[str]) -> Caller:
        """The caller behind a bearer token (preferred) or a certificate identity."""
        if authorization is not None:
            if not authorization.lower().startswith(_BEARER):
                raise UnauthenticatedError("the authorization metadata must be 'Bearer <token>'")
            digest = hashlib.sha256(authorization[len(_BEARER) :].strip().encode()).digest()
            found: Caller | None = None
            for known, candidate in self._tokens:  # check every entry: no early exit to time
                if hmac.compare_digest(digest, known):
                    found = candidate
            if found is None:
                raise UnauthenticatedError("unknown bearer token")
            return found
        for identity in identities:
            caller = self._by_identity.get(identity)
            if caller is not None:
                return caller
        if identities:
            raise UnauthenticatedError("the client certificate is not known to the caller policy")
        raise UnauthenticatedError("credentials required: a bearer token or a client certificate")


def load_policy(path: Path) -> CallerPolicy:
    """Read and validate the policy file at `path`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise PolicyError(f"cannot read caller policy {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"caller policy {path} is not valid TOML: {error}") from None
    try:
        return CallerPolicy(PolicyFile.model_validate(data))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise PolicyError(f"caller policy {path} is invalid: {problems}") from None
