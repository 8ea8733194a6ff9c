"""Transport security and caller identity: TLS, mutual TLS, the caller policy, its start checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sessionmonitoring.v1 import session_monitoring_pb2 as pb
from sessionmonitoring.v1 import session_monitoring_pb2_grpc as pb_grpc

from server.app import create_app
from server.config import load_settings
from server.transport.auth import CallerPolicy, load_policy
from server.transport.errors import REASON_TENANT_NOT_ALLOWED, REASON_UNAUTHENTICATED
from tests.certs import SERVER_HOST, SERVER_IP, CertificateAuthority, KeyPair
from tests.factories import Factory, tenant_metadata
from tests.helpers import failure, serving

REPO_ROOT = Path(__file__).resolve().parents[2]
GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICE = "sessionmonitoring.v1.SessionMonitoring"
# Generous: only guards against a hung subprocess, never measures anything.
PROCESS_TIMEOUT_SECONDS = 60
# Bounds every call so that a refused handshake fails the call instead of retrying forever.
CALL_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Pki:
    """A CA with a server certificate for localhost/127.0.0.1, in a test's tmp_path."""

    authority: CertificateAuthority
    server: KeyPair


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    authority = CertificateAuthority(tmp_path)
    return Pki(authority, authority.server())


@pytest.fixture
def other_authority(tmp_path: Path) -> CertificateAuthority:
    """A CA nobody in the test trusts."""
    directory = tmp_path / "other"
    directory.mkdir()
    return CertificateAuthority(directory, "Untrusted Test CA")


def _credentials(pki: Pki, client: KeyPair | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.authority.cert_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.authority.cert_pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )


async def _list(
    channel: grpc.aio.Channel, tenant: str, *extra: tuple[str, str]
) -> pb.ListSessionsResponse:
    stub = pb_grpc.SessionMonitoringStub(channel)
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(),
        metadata=[*tenant_metadata(tenant), *extra],
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return response


async def _list_over_tls(
    port: int, pki: Pki, tenant: str, *, client: KeyPair | None = None
) -> pb.ListSessionsResponse:
    async with grpc.aio.secure_channel(
        f"{SERVER_HOST}:{port}", _credentials(pki, client)
    ) as channel:
        return await _list(channel, tenant)


def _tls(pki: Pki, *, client_ca: bool = False) -> dict[str, Any]:
    """Settings overrides for TLS, or mutual TLS with `client_ca`."""
    settings: dict[str, Any] = {
        "tls_cert_file": pki.server.cert_file,
        "tls_key_file": pki.server.key_file,
    }
    if client_ca:
        settings["tls_client_ca_file"] = pki.authority.cert_file
    return settings


# --- TLS ---------------------------------------------------------------------------------------


async def test_a_tls_server_answers_a_client_that_trusts_its_ca(
    database_url: str, factory: Factory, tenant: str, pki: Pki
) -> None:
    await factory.sessions(tenant, 2)
    async with serving(database_url, **_tls(pki)) as app:
        response = await _list_over_tls(app.port, pki, tenant)
    assert response.pagination.total == 2
    assert {session.tenant_id for session in response.sessions} == {tenant}


async def test_a_tls_server_matches_its_ip_address_san_when_named_by_ip(
    database_url: str, factory: Factory, tenant: str, pki: Pki
) -> None:
    await factory.sessions(tenant, 1)
    async with (
        serving(database_url, **_tls(pki)) as app,
        grpc.aio.secure_channel(f"{SERVER_IP}:{app.port}", _credentials(pki)) as channel,
    ):
        response = await _list(channel, tenant)
    assert response.pagination.total == 1


async def test_a_plaintext_client_cannot_call_a_tls_server(
    database_url: str, tenant: str, pki: Pki
) -> None:
    async with (
        serving(database_url, **_tls(pki)) as app,
        grpc.aio.insecure_channel(f"{SERVER_IP}:{app.port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list(channel, tenant)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_server_ca_is_refused(
    database_url: str, tenant: str, pki: Pki, other_authority: CertificateAuthority
) -> None:
    untrusting = Pki(other_authority, pki.server)
    async with serving(database_url, **_tls(pki)) as app:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list_over_tls(app.port, untrusting, tenant)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Run:
    """What one grpcurl invocation produced."""

    returncode: int
    stdout: str
    stderr: str


async def _grpcurl(*args: str) -> Run:
    # The server lives on this event loop, so the subprocess must be awaited, never blocked on.
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def _grpcurl_list_sessions(tenant: str, port: int, *tls: str) -> tuple[str, ...]:
    return (
        *tls,
        "-H",
        f"x-tenant-id:{tenant}",
        "-d",
        "{}",
        f"{SERVER_IP}:{port}",
        f"{SERVICE}/ListSessions",
    )


async def test_grpcurl_calls_a_tls_server_that_it_verifies_with_the_ca(
    database_url: str, factory: Factory, tenant: str, pki: Pki
) -> None:
    newest_first = await factory.sessions(tenant, 2)
    async with serving(database_url, **_tls(pki)) as app:
        verified = await _grpcurl(
            *_grpcurl_list_sessions(tenant, app.port, "-cacert", str(pki.authority.cert_file))
        )
        # Without the CA, grpcurl must not trust the server: proves it really verified it.
        unverified = await _grpcurl(*_grpcurl_list_sessions(tenant, app.port))
    assert verified.returncode == 0, verified.stderr
    assert [s["session_id"] for s in json.loads(verified.stdout)["sessions"]] == newest_first
    assert unverified.returncode != 0


# --- mutual TLS --------------------------------------------------------------------------------


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    database_url: str, tenant: str, pki: Pki
) -> None:
    async with serving(database_url, **_tls(pki, client_ca=True)) as app:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list_over_tls(app.port, pki, tenant)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_accepts_a_client_certificate_signed_by_the_client_ca(
    database_url: str, factory: Factory, tenant: str, pki: Pki
) -> None:
    await factory.sessions(tenant, 3)
    client = pki.authority.client("reporting", ["reporting.internal"])
    async with serving(database_url, **_tls(pki, client_ca=True)) as app:
        response = await _list_over_tls(app.port, pki, tenant, client=client)
    assert response.pagination.total == 3


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    database_url: str, tenant: str, pki: Pki, other_authority: CertificateAuthority
) -> None:
    stranger = other_authority.client("stranger")
    async with serving(database_url, **_tls(pki, client_ca=True)) as app:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list_over_tls(app.port, pki, tenant, client=stranger)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpcurl_calls_a_mutual_tls_server_with_a_client_certificate(
    database_url: str, factory: Factory, tenant: str, pki: Pki
) -> None:
    newest_first = await factory.sessions(tenant, 2)
    client = pki.authority.client("grpcurl")
    ca = str(pki.authority.cert_file)
    async with serving(database_url, **_tls(pki, client_ca=True)) as app:
        with_cert = await _grpcurl(
            *_grpcurl_list_sessions(
                tenant,
                app.port,
                "-cacert",
                ca,
                "-cert",
                str(client.cert_file),
                "-key",
                str(client.key_file),
            )
        )
        without_cert = await _grpcurl(*_grpcurl_list_sessions(tenant, app.port, "-cacert", ca))
    assert with_cert.returncode == 0, with_cert.stderr
    assert [s["session_id"] for s in json.loads(with_cert.stdout)["sessions"]] == newest_first
    assert without_cert.returncode != 0


# --- caller policy -----------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def _policy(directory: Path, toml: str) -> CallerPolicy:
    path = directory / "callers.toml"
    path.write_text(toml)
    return load_policy(path)


@dataclass(frozen=True)
class TokenServer:
    """A plaintext server whose policy binds `token` to `tenant` and `admin_token` to `*`."""

    channel: grpc.aio.Channel
    token: str
    admin_token: str


@pytest.fixture
async def token_server(
    database_url: str, tmp_path: Path, tenant: str
) -> AsyncIterator[TokenServer]:
    token, admin_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    policy = _policy(
        tmp_path,
        f"""
[[callers]]
name = "billing"
token_sha256 = ["{_token_hash(token)}"]
tenants = ["{tenant}"]

[[callers]]
name = "ops-dashboard"
token_sha256 = ["{_token_hash(admin_token)}"]
tenants = ["*"]
""",
    )
    async with (
        serving(database_url, policy=policy) as app,
        grpc.aio.insecure_channel(f"{SERVER_IP}:{app.port}") as channel,
    ):
        yield TokenServer(channel, token, admin_token)


def _other_tenant(tenant: str) -> str:
    return f"{tenant}-other"


async def test_a_token_bound_to_a_tenant_reads_that_tenant(
    token_server: TokenServer, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 2)
    response = await _list(token_server.channel, tenant, _bearer(token_server.token))
    assert response.pagination.total == 2


_REQUESTS = {
    "ListSessions": pb.ListSessionsRequest(),
    "GetSessionDetail": pb.GetSessionDetailRequest(session_id="s"),
    "UpdateSessionStatus": pb.UpdateSessionStatusRequest(
        session_id="s", status=pb.SESSION_STATUS_CLOSED
    ),
}


@pytest.mark.parametrize("method", list(_REQUESTS))
async def test_a_token_bound_to_a_tenant_is_denied_every_rpc_for_another_tenant(
    token_server: TokenServer, factory: Factory, tenant: str, method: str
) -> None:
    other = _other_tenant(tenant)
    await factory.session(other, "s", metadata={"status": "active"})
    rpc = getattr(pb_grpc.SessionMonitoringStub(token_server.channel), method)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rpc(
            _REQUESTS[method],
            metadata=[*tenant_metadata(other), _bearer(token_server.token)],
            timeout=CALL_TIMEOUT_SECONDS,
        )
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.PERMISSION_DENIED
    assert got.reason == REASON_TENANT_NOT_ALLOWED
    # A denied update must leave the other tenant's row as it was.
    assert (await factory.metadata(other, "s")) == {"status": "active"}


async def test_a_wildcard_token_acts_for_every_tenant(
    token_server: TokenServer, factory: Factory, tenant: str
) -> None:
    other = _other_tenant(tenant)
    await factory.sessions(tenant, 1)
    await factory.sessions(other, 2)
    admin = _bearer(token_server.admin_token)
    assert (await _list(token_server.channel, tenant, admin)).pagination.total == 1
    assert (await _list(token_server.channel, other, admin)).pagination.total == 2


async def test_an_unknown_token_is_unauthenticated(token_server: TokenServer, tenant: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(token_server.channel, tenant, _bearer(secrets.token_urlsafe(32)))
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.reason == REASON_UNAUTHENTICATED


async def test_a_call_without_credentials_is_unauthenticated(
    token_server: TokenServer, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(token_server.channel, tenant)
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.reason == REASON_UNAUTHENTICATED


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("Basic {token}", id="basic-scheme"),
        pytest.param("{token}", id="no-scheme"),
        pytest.param("Bearer:{token}", id="no-space"),
        pytest.param("Token {token}", id="other-scheme"),
    ],
)
async def test_an_authorization_that_is_not_a_bearer_token_is_unauthenticated(
    token_server: TokenServer, tenant: str, scheme: str
) -> None:
    # Even carrying the valid token, the wrong scheme must not identify the caller.
    authorization = ("authorization", scheme.format(token=token_server.token))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(token_server.channel, tenant, authorization)
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.reason == REASON_UNAUTHENTICATED
    assert token_server.token not in got.message


async def test_the_bearer_scheme_is_case_insensitive(
    token_server: TokenServer, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 1)
    authorization = ("authorization", f"bearer {token_server.token}")
    assert (await _list(token_server.channel, tenant, authorization)).pagination.total == 1


async def test_health_answers_without_credentials_when_the_policy_is_on(
    token_server: TokenServer,
) -> None:
    # Load balancers probe health without credentials; the policy guards tenant data only.
    health = health_pb2_grpc.HealthStub(token_server.channel)
    response = await health.Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=CALL_TIMEOUT_SECONDS
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class CertificateServer:
    """A mutual-TLS server whose policy names callers by certificate CN and by SAN."""

    port: int
    pki: Pki


@pytest.fixture
async def certificate_server(
    database_url: str, tmp_path: Path, tenant: str, pki: Pki
) -> AsyncIterator[CertificateServer]:
    policy = _policy(
        tmp_path,
        f"""
[[callers]]
name = "by-common-name"
certificate_identities = ["billing-service"]
tenants = ["{tenant}"]

[[callers]]
name = "by-san"
certificate_identities = ["reports.internal"]
tenants = ["{_other_tenant(tenant)}"]
""",
    )
    async with serving(database_url, policy=policy, **_tls(pki, client_ca=True)) as app:
        yield CertificateServer(app.port, pki)


async def test_a_certificate_listed_by_common_name_maps_to_its_tenants(
    certificate_server: CertificateServer, factory: Factory, tenant: str
) -> None:
    await factory.sessions(tenant, 2)
    pki = certificate_server.pki
    client = pki.authority.client("billing-service")
    response = await _list_over_tls(certificate_server.port, pki, tenant, client=client)
    assert response.pagination.total == 2
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list_over_tls(certificate_server.port, pki, _other_tenant(tenant), client=client)
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.PERMISSION_DENIED
    assert got.reason == REASON_TENANT_NOT_ALLOWED


async def test_a_certificate_listed_by_subject_alternative_name_maps_to_its_tenants(
    certificate_server: CertificateServer, factory: Factory, tenant: str
) -> None:
    other = _other_tenant(tenant)
    await factory.sessions(other, 3)
    pki = certificate_server.pki
    # The CN is unknown to the policy: only the SAN can identify this caller.
    client = pki.authority.client("reports-host-7", ["node7.example", "reports.internal"])
    response = await _list_over_tls(certificate_server.port, pki, other, client=client)
    assert response.pagination.total == 3
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list_over_tls(certificate_server.port, pki, tenant, client=client)
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.PERMISSION_DENIED
    assert got.reason == REASON_TENANT_NOT_ALLOWED


async def test_a_valid_certificate_not_in_the_policy_is_unauthenticated(
    certificate_server: CertificateServer, tenant: str
) -> None:
    pki = certificate_server.pki
    client = pki.authority.client("unlisted-service", ["unlisted.internal"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list_over_tls(certificate_server.port, pki, tenant, client=client)
    got = failure(raised.value)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.reason == REASON_UNAUTHENTICATED


# --- policy file checked at start --------------------------------------------------------------

_VALID_HASH = "ab" * 32
_BAD_POLICIES = {
    "invalid-toml": "[[callers]\nname = ",
    "unknown-key": (
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_VALID_HASH}"]\ntenants = ["*"]\n'
        'role = "admin"\n'
    ),
    "bad-token-hash": '[[callers]]\nname = "a"\ntoken_sha256 = ["not-a-sha256"]\ntenants = ["*"]\n',
    "caller-without-credentials": '[[callers]]\nname = "a"\ntenants = ["*"]\n',
    "duplicate-names": (
        f'[[callers]]\nname = "a"\ntoken_sha256 = ["{_VALID_HASH}"]\ntenants = ["*"]\n'
        '[[callers]]\nname = "a"\ncertificate_identities = ["a.internal"]\ntenants = ["*"]\n'
    ),
}


@pytest.mark.parametrize("case", ["missing-file", *_BAD_POLICIES])
async def test_serve_exits_2_with_one_line_for_a_bad_policy_file(
    database_url: str, tmp_path: Path, case: str
) -> None:
    path = tmp_path / f"{case}.toml"
    if case in _BAD_POLICIES:
        path.write_text(_BAD_POLICIES[case])
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": "127.0.0.1:0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--caller-policy-file",
        str(path),
        env=env,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_SECONDS)
    except TimeoutError:
        # A valid-looking policy would make it serve forever: that is the failure here.
        process.kill()
        await process.wait()
        raise
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 2, lines
    assert len(lines) == 1, lines
    assert str(path) in lines[0]


# --- plaintext warning -------------------------------------------------------------------------


async def test_plaintext_on_a_non_loopback_address_logs_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        app = create_app(load_settings(address="0.0.0.0:0"), database_url)
        await app.stop(0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PLAINTEXT" in r.getMessage() for r in warnings), caplog.text


async def test_plaintext_on_loopback_logs_no_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        async with serving(database_url):
            pass
    assert not any("PLAINTEXT" in r.getMessage() for r in caplog.records), caplog.text


async def test_tls_on_a_non_loopback_address_logs_no_plaintext_warning(
    database_url: str, caplog: pytest.LogCaptureFixture, pki: Pki
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        app = create_app(load_settings(address="0.0.0.0:0", **_tls(pki)), database_url)
        await app.stop(0)
    assert not any("PLAINTEXT" in r.getMessage() for r in caplog.records), caplog.text
