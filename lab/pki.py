"""A small certificate authority for the lab: server and client certificates on loopback names and addresses."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path

    def certificate_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes()).public_bytes(Encoding.DER)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class LabCa:
    def __init__(self, common_name: str, organization: str | None = None, days: float = 365) -> None:
        now = dt.datetime.now(dt.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name, organization)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert.public_bytes(Encoding.PEM))
        return path

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organization: str | None = None,
        dns: list[str] | None = None,
        addresses: list[str] | None = None,
        days: float = 30,
        client: bool = False,
        with_chain: bool = False,
    ) -> Issued:
        """Writes ``stem.pem`` and ``stem.key`` (0600); ``with_chain`` appends the CA to the certificate file."""
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns or []]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses or []]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if client:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
        chain = self.cert.public_bytes(Encoding.PEM) if with_chain else b""
        cert_file.write_bytes(cert.public_bytes(Encoding.PEM) + chain)
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        key_file.chmod(0o600)
        return Issued(cert_file, key_file)


def winrm_tls(directory: Path, names: list[str], addresses: list[str]) -> tuple[ssl.SSLContext, Path, bytes]:
    """A lab CA and a certificate for WinRM endpoints; returns the server context, the CA file and the
    certificate (DER, for channel binding)."""
    ca = LabCa("Lab WinRM CA", days=30)
    issued = ca.issue(directory, "winrm", names[0], dns=names, addresses=addresses)
    return issued.server_context(), ca.write(directory / "winrm-ca.pem"), issued.certificate_der()
