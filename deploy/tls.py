"""A local certificate authority for federation on one machine (demo and tests).

Production servers use certificates from a public or administrative CA. On a
single machine (``maillage up --with-neighbour``, the federation tests) this
makes a small CA and a certificate per server, so that certificate checks stay
on: partners trust the CA through ``federation.autorites``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from maillage.secretstore import write_private


@dataclass(frozen=True)
class ServerCertificate:
    certificate: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Maillage (local)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def ensure_local_ca(directory: Path) -> Path:
    """The CA certificate (created once); its key stays in ``directory`` (0600)."""
    certificate = directory / "ca.pem"
    if certificate.exists():
        return certificate
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Maillage CA locale"))
        .issuer_name(_name("Maillage CA locale"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(directory / "ca.key", _key_pem(key))
    certificate.write_text(ca.public_bytes(serialization.Encoding.PEM).decode())
    return certificate


def issue_server_certificate(ca_directory: Path, destination: Path, host: str) -> ServerCertificate:
    """A certificate for ``host`` (and 127.0.0.1, ::1) signed by the local CA."""
    ensure_local_ca(ca_directory)
    ca_key = serialization.load_pem_private_key((ca_directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((ca_directory / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    destination.mkdir(parents=True, exist_ok=True)
    paths = ServerCertificate(certificate=destination / "federation.crt", key=destination / "federation.key")
    write_private(paths.key, _key_pem(key))
    paths.certificate.write_text(certificate.public_bytes(serialization.Encoding.PEM).decode())
    return paths
