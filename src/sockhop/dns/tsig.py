"""TSIG (RFC 8945): shared-secret keys that sign requests and their answers, and who may transfer or update.

Keys are written as BIND writes them -- a key file (``key "name" { algorithm hmac-sha256; secret "..."; };``,
what ``tsig-keygen`` prints) or ``[ALGORITHM:]NAME:SECRET`` as ``nsupdate -y`` and ``dig -y`` take them -- and
kept as dnspython's keyring, which signs and checks. A request whose signature does not check gets NOTAUTH with the
TSIG error in its TSIG record (RFC 8945 section 5.2): BADKEY and BADSIG unsigned (the server cannot or must not
sign with a key it did not verify), BADTIME signed and carrying the server's clock, so the client can see the skew.

A dynamic update is checked and its answer signed on the wire instead (:class:`WireKey`): the MAC over the message
as it came, without its TSIG record, and the TSIG variables (RFC 8945 section 4.3) -- a few microseconds with
hmac, where reading and writing whole messages through dnspython cost a tenth of a millisecond each way.
"""

from __future__ import annotations

import hmac
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
#: a TSIG record's error names (16 is BADSIG there; dns.rcode.to_text says BADVERS, its meaning in an OPT record)
TSIG_ERRORS = {Rcode.BADSIG: "BADSIG", Rcode.BADKEY: "BADKEY", Rcode.BADTIME: "BADTIME"}
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
    raise BadTsig(error_reply(unsigned, error, ring), f"TSIG {TSIG_ERRORS[error]} key {unsigned.keyname}")


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


TSIG_TYPE = 250
ANY_CLASS = 255
FUDGE = 300  # seconds of clock skew a signature we make allows, as dnspython's and BIND's
LENGTH = struct.Struct("!H")
RR_HEADER = struct.Struct("!HHIH")  # type, class, TTL, data length
TIMES = struct.Struct("!HIH")  # time signed (48 bits), fudge


class WireKey:
    """A key ready to check and make signatures on the wire: its names in the forms the MAC covers and the record
    carries, and the hash its algorithm names (dnspython's table, truncated variants included)."""

    __slots__ = ("key", "owner", "algorithm", "covered", "covered_algorithm", "digest", "size")

    def __init__(self, key: dns.tsig.Key) -> None:
        self.key = key
        self.owner = key.name.to_wire()  # the TSIG record's owner, uncompressed (RFC 8945 section 4.2)
        self.algorithm = key.algorithm.to_wire()
        #: the TSIG variables before the time: the key name, canonical, class ANY, TTL 0 (section 4.3.3)
        self.covered = key.name.to_digestable() + struct.pack("!HI", ANY_CLASS, 0)
        self.covered_algorithm = key.algorithm.to_digestable()
        hashing = dns.tsig.HMACTSig._hashes.get(key.algorithm)
        if hashing is None:
            raise TsigError(f"{key.name}: algorithm {key.algorithm} cannot sign on the wire")
        self.digest, self.size = hashing if isinstance(hashing, tuple) else (hashing, None)

    def mac(self, *pieces: bytes) -> bytes:
        digest = hmac.new(self.key.secret, b"".join(pieces), self.digest).digest()
        return digest[: self.size // 8] if self.size else digest

    def verified(self, message: bytes, start: int, algorithm: dns.name.Name, signed_at: int, fudge: int, mac: bytes,
                 original_id: int, error: int, other: bytes, now: int) -> bool:  # fmt: skip
        """Whether the request ``message``, whose TSIG record (read already) begins at ``start``, was signed with this
        key within its fudge of ``now``. Anything else -- an error in the record, another algorithm, a MAC that
        differs (compared in constant time), a stale time -- is False: the caller answers it as RFC 8945 says."""
        if error or (algorithm is not self.key.algorithm and algorithm != self.key.algorithm):
            return False
        (additional,) = LENGTH.unpack_from(message, 10)
        expected = self.mac(
            LENGTH.pack(original_id), message[2:10], LENGTH.pack(additional - 1), message[12:start], self.covered,
            self.covered_algorithm, TIMES.pack(signed_at >> 32, signed_at & 0xFFFFFFFF, fudge),
            struct.pack("!HH", error, len(other)), other,
        )  # fmt: skip
        return hmac.compare_digest(expected, mac) and abs(signed_at - now) <= fudge

    def sign(self, reply: bytes, request_mac: bytes, now: int) -> bytes:
        """``reply`` (an answer to a request signed with this key, whose MAC was ``request_mac``) with its TSIG record
        added: the MAC over the request's MAC, the reply and the TSIG variables (RFC 8945 section 5.3)."""
        times = TIMES.pack(now >> 32, now & 0xFFFFFFFF, FUDGE)
        mac = self.mac(LENGTH.pack(len(request_mac)), request_mac, reply, self.covered, self.covered_algorithm, times,
                       b"\x00\x00\x00\x00")  # fmt: skip
        data = b"".join((self.algorithm, times, LENGTH.pack(len(mac)), mac, reply[:2], b"\x00\x00\x00\x00"))
        (additional,) = LENGTH.unpack_from(reply, 10)
        return b"".join((reply[:10], LENGTH.pack(additional + 1), reply[12:], self.owner,
                         RR_HEADER.pack(TSIG_TYPE, ANY_CLASS, 0, len(data)), data))  # fmt: skip


def wire_keys(ring: Keyring) -> dict[dns.name.Name, WireKey]:
    """The keys of ``ring`` ready for the wire, by name (those whose algorithm dnspython signs with HMAC)."""
    keys = {}
    for name, key in ring.items():
        try:
            keys[name] = WireKey(key)
        except TsigError:
            continue
    return keys
