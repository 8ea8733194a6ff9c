"""Throwaway X.509 certificates for TLS tests, made by trustme: a CA, a localhost server cert
and client certs, written as PEM files (the server's settings and grpcurl take file paths)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_HOST = "localhost"
SERVER_IP = "127.0.0.1"
# trustme puts every identity in the SAN, and a certificate needs at least one: a caller meant
# to be known by its CN alone carries this one, which no caller policy lists.
_UNLISTED_NAME = "unlisted-name.invalid"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> bytes:
        """The certificate, PEM encoded."""
        return self.cert_file.read_bytes()

    @property
    def key_pem(self) -> bytes:
        """The private key (unencrypted), PEM encoded."""
        return self.key_file.read_bytes()


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates into `directory`."""

    def __init__(self, directory: Path, common_name: str = "SessionMonitoring Test CA") -> None:
        self.directory = directory
        self._authority = trustme.CA(organization_unit_name=common_name)
        self.cert_file = directory / f"{_file_stem(common_name)}.crt"
        self._authority.cert_pem.write_to_path(self.cert_file)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM encoded (what clients and servers trust)."""
        return self.cert_file.read_bytes()

    def server(self, stem: str = "server") -> KeyPair:
        """A server certificate valid for `localhost` (SAN DNS) and 127.0.0.1 (SAN IP)."""
        return self._issue(stem, SERVER_HOST, (SERVER_HOST, SERVER_IP))

    def client(self, common_name: str, dns_names: Sequence[str] = ()) -> KeyPair:
        """A client certificate with subject CN `common_name` and the given SAN DNS names (none
        that a policy could list when there are none)."""
        return self._issue(
            f"client-{_file_stem(common_name)}", common_name, tuple(dns_names) or (_UNLISTED_NAME,)
        )

    def _issue(self, stem: str, common_name: str, identities: Sequence[str]) -> KeyPair:
        issued = self._authority.issue_cert(*identities, common_name=common_name)
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert_file.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(pair.key_file)
        return pair


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)
