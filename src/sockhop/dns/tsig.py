"""TSIG (RFC 8945): shared-secret keys that sign requests and their answers, and who may transfer or update.

Keys are written as BIND writes them -- a key file (``key "name" { algorithm hmac-sha256; secret "..."; };``,
what ``tsig-keygen`` prints) or ``[ALGORITHM:]NAME:SECRET`` as ``nsupdate -y`` and ``dig -y`` take them -- and
kept as dnspython's keyring, which signs and checks. A request whose signature does not check gets NOTAUTH with the
TSIG error in its TSIG record (RFC 8945 section 5.2): BADKEY and BADSIG unsigned (the server cannot or must not
sign with a key it did not verify), BADTIME signed and carrying the server's clock, so the client can see the skew.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.tsig

from sockhop.errors import SockhopError
from sockhop.net.addresses import peer_ip

Rcode = dns.rcode.Rcode
DEFAULT_ALGORITHM = "hmac-sha256"
ALGORITHMS = {  # the names BIND's files and -y use, and dnspython's
    "hmac-md5": dns.tsig.HMAC_MD5, "hmac-sha1": dns.tsig.HMAC_SHA1, "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha384": dns.tsig.HMAC_SHA384, "hmac-sha512": dns.tsig.HMAC_SHA512,
}  # fmt: skip
KEY_PREFIX = "key:"
Keyring = dict[dns.name.Name, dns.tsig.Key]


class TsigError(SockhopError):
    """A TSIG key that cannot be used."""


def key_from_spec(spec: str) -> dns.tsig.Key:
    """``[ALGORITHM:]NAME:SECRET``, as ``nsupdate -y`` and ``dig -y`` read it (hmac-sha256 without ALGORITHM)."""
    parts = spec.split(":")
    if len(parts) == 2:
        algorithm, (name, secret) = DEFAULT_ALGORITHM, parts
    elif len(parts) == 3:
        algorithm, name, secret = parts
    else:
        raise TsigError(f"--tsig {spec}: write [ALGORITHM:]NAME:SECRET, as nsupdate -y")
    return make_key(name, algorithm, secret, f"--tsig {name}")


KEY_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)
CLAUSE = re.compile(r'(\w+)\s+"?([^";]+?)"?\s*;')


def keys_from_file(path: str) -> list[dns.tsig.Key]:
    """Every ``key "name" { algorithm A; secret "S"; };`` in a BIND key file (tsig-keygen's output)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise TsigError(f"--tsig-keyfile {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TsigError(f"--tsig-keyfile {path}: not a text file") from None
    text = re.sub(r"(#|//)[^\n]*", "", text)
    keys = []
    for name, body in KEY_BLOCK.findall(text):
        clauses = {word.lower(): value.strip() for word, value in CLAUSE.findall(body)}
        if "secret" not in clauses:
            raise TsigError(f"--tsig-keyfile {path}: key {name} has no secret")
        keys.append(make_key(name, clauses.get("algorithm", DEFAULT_ALGORITHM), clauses["secret"], f"{path}: {name}"))
    if not keys:
        raise TsigError(f'--tsig-keyfile {path}: no key "NAME" {{ algorithm ...; secret "..."; }}; in it')
    return keys


def make_key(name: str, algorithm: str, secret: str, where: str) -> dns.tsig.Key:
    algorithm = algorithm.lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        raise TsigError(f"{where}: unknown algorithm {algorithm} (use one of {', '.join(ALGORITHMS)})")
    try:
        return dns.tsig.Key(dns.name.from_text(name), secret, ALGORITHMS[algorithm])
    except (dns.exception.DNSException, ValueError):  # binascii.Error is a ValueError
        raise TsigError(f"{where}: the name or the secret (base64) cannot be read") from None


def keyring(specs: Iterable[str] = (), files: Iterable[str] = ()) -> Keyring:
    ring: Keyring = {}
    for path in files:
        for key in keys_from_file(path):
            ring[key.name] = key
    for spec in specs:
        key = key_from_spec(spec)
        ring[key.name] = key
    return ring


@dataclass
class Acl:
    """Who may do something: addresses and networks, and names of TSIG keys (``key:NAME``); nobody when empty.
    A request signed with a listed key may come from anywhere; an address alone lets unsigned requests in."""

    networks: list = field(default_factory=list)
    keys: set[dns.name.Name] = field(default_factory=set)

    @classmethod
    def parse(cls, option: str, entries: Iterable[str], ring: Keyring) -> Acl:
        acl = cls()
        for entry in entries:
            if entry.startswith(KEY_PREFIX):
                name = dns.name.from_text(entry[len(KEY_PREFIX) :])
                if name not in ring:
                    raise TsigError(f"{option} {entry}: no such key (give it with --tsig or --tsig-keyfile)")
                acl.keys.add(name)
                continue
            try:
                acl.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise TsigError(f"{option} {entry}: not an address, a network (10.0.0.0/8) or key:NAME") from None
        return acl

    def __bool__(self) -> bool:
        return bool(self.networks or self.keys)

    def allows(self, peer: object, key: dns.name.Name | None) -> bool:
        if key is not None and key in self.keys:
            return True
        address = peer_ip(peer)
        return address is not None and any(address in net for net in self.networks)


class BadTsig(Exception):
    """A request whose TSIG does not verify; ``reply`` is the NOTAUTH answer RFC 8945 prescribes."""

    def __init__(self, reply: bytes, summary: str) -> None:
        super().__init__(summary)
        self.reply = reply
        self.summary = summary


def parse(data: bytes, ring: Keyring) -> dns.message.Message:
    """The message, its TSIG checked against ``ring``. Raises :class:`BadTsig` for a signature that fails, and
    dnspython's errors for a message that cannot be read."""
    try:
        return dns.message.from_wire(data, keyring=ring, ignore_trailing=False)
    except dns.message.UnknownTSIGKey:
        error = Rcode.BADKEY
    except dns.tsig.BadAlgorithm:
        error = Rcode.BADKEY
    except dns.tsig.BadKey:
        error = Rcode.BADKEY
    except dns.tsig.BadSignature:
        error = Rcode.BADSIG
    except dns.tsig.BadTime:
        error = Rcode.BADTIME
    unsigned = dns.message.from_wire(data, keyring=lambda message, name: False, ignore_trailing=False)
    raise BadTsig(error_reply(unsigned, error, ring), f"TSIG {dns.rcode.to_text(error)} key {unsigned.keyname}")


def error_reply(query: dns.message.Message, error: int, ring: Keyring) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(Rcode.NOTAUTH)
    response.answer, response.authority, response.additional = [], [], []
    now = int(time.time())
    key = ring.get(query.keyname) if query.keyname is not None else None
    if error == Rcode.BADTIME and key is not None:  # signed, the server's time in the other data
        response.use_tsig(key, tsig_error=error, other_data=struct.pack("!HI", now >> 32, now & 0xFFFFFFFF))
        response.request_mac = query.mac or b""
        return response.to_wire()
    response.tsig = dns.message.Message._make_tsig(
        query.keyname, query.keyalgorithm, now, 300, b"", query.id, error, b""
    )
    response.want_tsig_sign = False
    return response.to_wire()
