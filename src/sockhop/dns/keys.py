"""DNSSEC signing keys on disk (what ``sockhop dns keygen`` writes and ``serve dns --sign`` reads).

A key file holds one private key in PKCS #8 PEM (what ``openssl pkey`` reads) after comment lines naming its zone,
algorithm and key tag. It is created readable by its owner alone (0600), and a key file others can read is refused
when the server starts, as ssh refuses such a private key. One key signs everything (a combined signing key, flags
257): its DS goes to the parent. dnspython makes the DNSKEY and DS and signs; the keys are cryptography's.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdtypes.ANY.DNSKEY

from sockhop.errors import SockhopError

with warnings.catch_warnings():  # dnspython imports cryptography's DSA, which warns it is deprecated
    warnings.simplefilter("ignore")
    import dns.dnssec

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402

ALGORITHMS = {"ECDSAP256SHA256": dns.dnssec.Algorithm.ECDSAP256SHA256, "ED25519": dns.dnssec.Algorithm.ED25519}
KSK_FLAGS = 257  # ZONE and SEP: one key signs all, and the parent's DS names it


class KeyFileError(SockhopError):
    """A key file cannot be used."""


@dataclass(frozen=True)
class SigningKey:
    zone: dns.name.Name
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    source: str = ""

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    def ds_text(self, ttl: int = 3600) -> str:
        ds = dns.dnssec.make_ds(self.zone, self.dnskey, "SHA256")
        return f"{self.zone} {ttl} IN DS {ds.to_text()}"


def generate(zone: str, algorithm: str = "ECDSAP256SHA256") -> SigningKey:
    name = dns.name.from_text(zone)
    number = ALGORITHMS[algorithm.upper()]
    private = ec.generate_private_key(ec.SECP256R1()) if number == ALGORITHMS["ECDSAP256SHA256"] else None
    if private is None:
        private = ed25519.Ed25519PrivateKey.generate()
    dnskey = dns.dnssec.make_dnskey(private.public_key(), number, flags=KSK_FLAGS)
    return SigningKey(name, private, dnskey)


def save(key: SigningKey, path: Path) -> None:
    """Write the key readable by its owner alone; never over an existing file (a lost key breaks the zone)."""
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    algorithm = dns.dnssec.algorithm_to_text(key.dnskey.algorithm)
    head = f"; sockhop DNSSEC key\n; zone {key.zone}\n; algorithm {algorithm}\n; key tag {key.tag}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists (a key is not overwritten: move it away first)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(head.encode() + pem)


def load(path: str | os.PathLike[str]) -> SigningKey:
    """Read a key file; any problem is one KeyFileError line naming the file."""
    path = Path(path)
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (make one with: sockhop dns keygen ZONE)") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by others than its owner: chmod 600 {path}")
    zone = None
    for line in data.decode("utf-8", "replace").splitlines():
        words = line.lstrip("; ").split()
        if line.startswith(";") and len(words) == 2 and words[0] == "zone":
            zone = words[1]
    if zone is None:
        raise KeyFileError(f"{path}: not a sockhop key file (no '; zone NAME' line)")
    start = data.find(b"-----BEGIN")
    try:
        private = serialization.load_pem_private_key(data[start:] if start >= 0 else data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: the private key cannot be read ({exc})") from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        number = ALGORITHMS["ECDSAP256SHA256"]
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        number = ALGORITHMS["ED25519"]
    else:
        raise KeyFileError(f"{path}: not an ECDSA P-256 or Ed25519 key")
    try:
        name = dns.name.from_text(zone)
    except dns.exception.DNSException:
        raise KeyFileError(f"{path}: {zone!r} is not a zone name") from None
    dnskey = dns.dnssec.make_dnskey(private.public_key(), number, flags=KSK_FLAGS)
    return SigningKey(name, private, dnskey, str(path))


def default_path(zone: str) -> Path:
    """``example.com.key`` for zone example.com (the file keygen writes and ds reads without --key)."""
    return Path(f"{zone.rstrip('.') or 'root'}.key")
