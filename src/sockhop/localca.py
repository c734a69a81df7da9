"""A local certificate authority for loopback TLS, made with `cryptography` (never by shelling out to openssl).

`sockhop up` keeps one in its data folder: a CA certificate to give clients (``curl --cacert``), and a server
certificate it signs for ``localhost``, ``127.0.0.1``, ``::1`` and ``*.sockhop.test``. Both are made on first use
and made again when missing or within a week of expiring. The keys are readable by their owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1", "::1", "*.sockhop.test", "sockhop.test")
CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a leaf
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalPKI:
    ca: KeyPair
    server: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _alt_names(names: tuple[str, ...] | list[str]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


class CertificateAuthority:
    """A CA key and certificate, able to issue server certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, common_name: str = "sockhop local CA") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # keyCertSign, cRLSign
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, pair: KeyPair) -> CertificateAuthority:
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, x509.load_pem_x509_certificate(pair.cert.read_bytes()))

    def save(self, pair: KeyPair) -> None:
        pair.cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, self.key)

    def issue(self, names, pair: KeyPair, *, days: int = SERVER_DAYS, expired: bool = False) -> KeyPair:
        """Sign a server certificate for ``names`` (DNS names and IP addresses) and write it and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)
        if expired:
            start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair


def _fresh(pair: KeyPair) -> bool:
    if not (pair.cert.is_file() and pair.key.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def ensure_local_pki(folder: Path, names: tuple[str, ...] = SERVER_NAMES) -> LocalPKI:
    """The CA and server certificate in ``folder``, made (or renewed) if needed."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_pair = KeyPair(folder / "ca.pem", folder / "ca.key")
    server_pair = KeyPair(folder / "server.pem", folder / "server.key")
    if _fresh(ca_pair):
        ca = CertificateAuthority.load(ca_pair)
    else:
        ca = CertificateAuthority.create()
        ca.save(ca_pair)
        server_pair.cert.unlink(missing_ok=True)  # signed by the old CA: no longer trusted
    if not _fresh(server_pair):
        ca.issue(list(names), server_pair)
    return LocalPKI(ca_pair, server_pair)
