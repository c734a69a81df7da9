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
