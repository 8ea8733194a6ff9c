"""Throwaway X.509 certificates for TLS tests: a CA, a localhost server cert and client certs."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_HOST = "localhost"
SERVER_IP = "127.0.0.1"
# Backdated so clock skew between the test machine and the TLS stacks never matters.
_NOT_BEFORE_SKEW = timedelta(hours=1)
_LIFETIME = timedelta(days=1)


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
        """The private key (unencrypted PKCS#8), PEM encoded."""
        return self.key_file.read_bytes()


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates into `directory`."""

    def __init__(self, directory: Path, common_name: str = "SessionMonitoring Test CA") -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _NOT_BEFORE_SKEW)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / f"{_file_stem(common_name)}.crt"
        self.cert_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM encoded (what clients and servers trust)."""
        return self.cert_file.read_bytes()

    def server(self, stem: str = "server") -> KeyPair:
        """A server certificate valid for `localhost` (SAN DNS) and 127.0.0.1 (SAN IP)."""
        return self._issue(
            stem,
            common_name=SERVER_HOST,
            alternative_names=[
                x509.DNSName(SERVER_HOST),
                x509.IPAddress(ipaddress.ip_address(SERVER_IP)),
            ],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
        )

    def client(self, common_name: str, dns_names: Sequence[str] = ()) -> KeyPair:
        """A client certificate with subject CN `common_name` and the given SAN DNS names."""
        return self._issue(
            f"client-{_file_stem(common_name)}",
            common_name=common_name,
            alternative_names=[x509.DNSName(name) for name in dns_names],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    def _issue(
        self,
        stem: str,
        *,
        common_name: str,
        alternative_names: Sequence[x509.GeneralName],
        usage: x509.ObjectIdentifier,
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _NOT_BEFORE_SKEW)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alternative_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(alternative_names)), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        pair.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return pair


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)
