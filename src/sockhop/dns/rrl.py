"""Response rate limiting (RRL, as NSD, Knot and BIND ship it): a spoofed source must not turn this server into an
amplifier.

Replies over UDP are counted per client prefix (/24 for IPv4, /56 for IPv6) and per answer class -- the same name
and type, NXDOMAIN for one zone, any error -- in one-second windows. Past ``rate`` a reply is dropped, except every
``slip``-th, which goes out empty with TC set: a real client behind a spoofed flood asks again over TCP, where an
address is proven and nothing is limited. So is a client that returns a valid DNS cookie (:mod:`.cookies`).

The clock is the engine's (``DatagramProtocol.tick``), read once per batch of datagrams; a window ends when the
second changes and its counts go with it, so the state is bounded by one second of traffic and each query costs a
dict lookup for its prefix and one for its count.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sockhop.net.addresses import host_ip

ALLOW, DROP, SLIP = 0, 1, 2
DEFAULT_RATE = 200  # responses per second per prefix and class: NSD's rrl-ratelimit
DEFAULT_SLIP = 2  # NSD's and BIND's: every second limited reply goes out truncated
PREFIXES_KEPT = 65536  # client addresses whose prefix is remembered; forgotten all at once past this
EXEMPT = False  # the prefix of an exempt address


class RateLimiter:
    """Counts replies per (prefix, class) in the current second and says whether each may go out."""

    __slots__ = ("rate", "slip", "exempt", "second", "counts", "prefixes")

    def __init__(self, rate: int = DEFAULT_RATE, slip: int = DEFAULT_SLIP, exempt: Iterable[str] = ()) -> None:
        self.rate = rate
        self.slip = slip
        self.exempt = [ipaddress.ip_network(net, strict=False) for net in exempt]
        self.second = 0
        self.counts: dict[tuple[object, bytes], int] = {}
        self.prefixes: dict[str, object] = {}

    def tick(self, now: float) -> None:
        second = int(now)
        if second != self.second:
            self.second = second
            self.counts = {}
            if len(self.prefixes) > PREFIXES_KEPT:
                self.prefixes = {}

    def check(self, host: str, answer_class: bytes) -> int:
        """ALLOW, DROP or SLIP for one more reply of ``answer_class`` to ``host`` (the peer's address text)."""
        prefix = self.prefixes.get(host)
        if prefix is None:
            prefix = self.prefixes[host] = self._prefix(host)
        if prefix is EXEMPT:
            return ALLOW
        key = (prefix, answer_class)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count <= self.rate:
            return ALLOW
        if self.slip and (count - self.rate) % self.slip == 0:
            return SLIP
        return DROP

    def _prefix(self, host: str) -> object:
        address = host_ip(host)
        if address is None:
            return host
        if any(address in net for net in self.exempt):
            return EXEMPT
        return address.packed[:3] if address.version == 4 else address.packed[:7]


def truncated(query: bytes) -> bytes | None:
    """The slipped reply: the query's ID, opcode and RD, QR and TC set, its question echoed, nothing else -- no
    bigger than the query. None if the question cannot be read (such a query is dropped)."""
    end = 12
    size = len(query)
    while end < size and query[end]:
        if query[end] & 0xC0:
            return None
        end += 1 + query[end]
    end += 5
    if end > size or query[4:6] != b"\x00\x01":
        return None
    flags = ((query[2] & 0x79) | 0x82).to_bytes(1, "big")  # keep opcode and RD; QR, TC
    return query[:2] + flags + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
