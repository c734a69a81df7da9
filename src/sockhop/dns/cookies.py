"""DNS cookies (RFC 7873), server cookies as RFC 9018 lays them out: a client that returns the cookie this server
gave it has proven it receives at its address, so it is not rate limited.

A server cookie is version 1, three reserved bytes, a timestamp and an 8-byte hash of the client cookie, those
fields and the client's address under a secret. RFC 9018 uses SipHash-2-4 so that servers of one anycast address
agree; one server needs only a keyed hash, and BLAKE2b is the one the standard library has. The secret is made
when the server starts (workers forked from it share it), so cookies end with the server, as RFC 7873 allows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import struct

OPTION = 10  # the COOKIE option code
VERSION = 1
VALID_FOR = 3600  # RFC 9018 section 4.3: older cookies are not accepted
AHEAD = 300  # and none from more than five minutes in the future
REFRESH = 1800  # a cookie older than half an hour is answered with a fresh one


class CookieJar:
    """Makes and checks this server's cookies."""

    __slots__ = ("secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or os.urandom(16)

    def make(self, client: bytes, address: bytes, now: int) -> bytes:
        """The server cookie for ``client`` (its 8-byte cookie) at ``address`` (packed) at time ``now``."""
        head = struct.pack("!B3xI", VERSION, now & 0xFFFFFFFF)
        digest = hashlib.blake2b(client + head + address, digest_size=8, key=self.secret).digest()
        return head + digest

    def valid(self, client: bytes, server: bytes, address: bytes, now: int) -> bool:
        """Whether ``server`` is a cookie this server made for ``client`` at ``address``, and still fresh."""
        if len(server) != 16 or server[0] != VERSION:
            return False
        (stamp,) = struct.unpack_from("!I", server, 4)
        age = (now - stamp) & 0xFFFFFFFF  # serial number arithmetic: the timestamp wraps in 2106
        if age > VALID_FOR and (stamp - now) & 0xFFFFFFFF > AHEAD:
            return False
        return self.make(client, address, stamp) == server


def packed_address(peer: object) -> bytes:
    """The peer's address as bytes for the hash (b"" when the peer is not an IP socket address)."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])  # type: ignore[index]
    except (TypeError, IndexError, ValueError):
        return b""
    return address.packed


def split_cookie(query: bytes) -> tuple[bytes, bytes, bytes, int] | None:
    """(the query without its COOKIE option, the client cookie, the server cookie, the OPT's UDP payload size) when
    the query is one question
    and then an OPT record holding a well-formed COOKIE -- what every client sends; else None (and the query goes
    the slow way). Read from the bytes, so a cookie client's question is answered from the reply cache: its reply
    is the reply to the same question without the cookie, with ours added (:func:`with_cookie`)."""
    if query[4:12] != b"\x00\x01\x00\x00\x00\x00\x00\x01":
        return None
    size = len(query)
    at = 12
    while at < size and query[at]:
        if query[at] & 0xC0:
            return None
        at += 1 + query[at]
    opt = at + 5  # the root label, type and class
    start = opt + 11
    if query[opt : opt + 3] != b"\x00\x00\x29" or start > size or query[opt + 6]:
        return None  # no OPT, or EDNS above version 0 (BADVERS carries no cookie: the client must first speak 0)
    rdlength = int.from_bytes(query[opt + 9 : start], "big")
    if start + rdlength != size:
        return None
    at = start
    while at + 4 <= size:
        code = int.from_bytes(query[at : at + 2], "big")
        length = int.from_bytes(query[at + 2 : at + 4], "big")
        if code == OPTION:
            if length != 8 and not 16 <= length <= 40 or at + 4 + length > size:
                return None
            value = query[at + 4 : at + 4 + length]
            rest = (rdlength - 4 - length).to_bytes(2, "big")
            payload = int.from_bytes(query[opt + 3 : opt + 5], "big")
            return query[: opt + 9] + rest + query[start:at] + query[at + 4 + length :], value[:8], value[8:], payload
        at += 4 + length
    return None


def with_cookie(reply: bytes, client: bytes, server: bytes, limit: int) -> bytes:
    """``reply`` with a COOKIE option in its OPT record (which this server writes last, without options) -- unless
    it would then be over ``limit`` bytes, or has no such OPT (a header-only error): then as it is."""
    option = b"\x00\x0a\x00" + bytes([len(client) + len(server)]) + client + server
    if reply[-11:-8] != b"\x00\x00\x29" or reply[-2:] != b"\x00\x00" or len(reply) + len(option) > limit:
        return reply
    return reply[:-2] + len(option).to_bytes(2, "big") + option
