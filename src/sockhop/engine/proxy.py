"""The PROXY protocol (v1 text and v2 binary, as HAProxy and cloud load balancers send it), as a sans-IO layer.

Behind a load balancer every connection comes from the balancer; the PROXY header it sends first says who the real
client is. This layer reads that header and only then tells the inner protocol ``connection_made(real_client,
real_destination)``, so logs and mail trace headers show the real address. It is the outermost layer: the header
comes before a TLS handshake.

Only the addresses given may speak it: from anywhere else a connection is served as it is, and one that starts
with a PROXY header anyway is refused -- a client must not be able to forge its own address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterable

from sockhop.engine.protocol import Address, Reply, StreamProtocol, as_reply
from sockhop.engine.shared import peer_name
from sockhop.errors import RemoteProtocolError, SockhopError
from sockhop.net.addresses import peer_ip

log = logging.getLogger("sockhop.proxy")

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's own figure)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")


class ProxyHeaderError(RemoteProtocolError):
    """The PROXY protocol header is malformed."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_sources(texts: Iterable[str]) -> list[Network]:
    """Addresses or networks (``10.0.0.0/8``, ``::1``) allowed to send PROXY headers; one plain line if not."""
    nets = []
    for text in texts:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise SockhopError(
                f"--proxy-protocol wants an address or network such as 127.0.0.1 or 10.0.0.0/8, not {text!r}"
            ) from None
    return nets


def parse_v1(line: bytes) -> tuple[Address | None, Address | None]:
    """``PROXY TCP4 src dst sport dport`` (or ``PROXY UNKNOWN ...``: keep the connection's own addresses)."""
    parts = line.decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None, None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 line {line[:60]!r}")
    try:
        src, dst = ipaddress.ip_address(parts[2]), ipaddress.ip_address(parts[3])
        sport, dport = int(parts[4]), int(parts[5])
    except ValueError:
        raise ProxyHeaderError(f"bad PROXY v1 addresses {line[:60]!r}") from None
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535) or src.version != dst.version:
        raise ProxyHeaderError("bad PROXY v1 ports or families")
    return _address(src, sport), _address(dst, dport)


def parse_v2(header: bytes, body: bytes) -> tuple[Address | None, Address | None]:
    _, ver_cmd, fam, _ = V2_HEADER.unpack(header)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("bad PROXY v2 version")
    if ver_cmd & 0x0F == 0:  # LOCAL: the balancer's own health check; the connection's addresses are the truth
        return None, None
    if ver_cmd & 0x0F != 1:
        raise ProxyHeaderError("bad PROXY v2 command")
    family = fam >> 4
    if family == 1 and len(body) >= 12:
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return _address(ipaddress.IPv4Address(src), sport), _address(ipaddress.IPv4Address(dst), dport)
    if family == 2 and len(body) >= 36:
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return _address(ipaddress.IPv6Address(src), sport), _address(ipaddress.IPv6Address(dst), dport)
    if family == 0:
        return None, None
    raise ProxyHeaderError("unsupported PROXY v2 address family")


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    return (str(ip), port) if ip.version == 4 else (str(ip), port, 0, 0)


def format_v1(src: Address, dst: Address) -> bytes:
    """A v1 header, for clients and tests."""
    family = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {family} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def format_v2(src: Address, dst: Address) -> bytes:
    """A v2 PROXY header, for clients and tests."""
    if ":" in src[0]:
        fam = 0x21
        body = struct.pack("!16s16sHH", socket.inet_pton(socket.AF_INET6, src[0]),
                           socket.inet_pton(socket.AF_INET6, dst[0]), src[1], dst[1])  # fmt: skip
    else:
        fam = 0x11
        body = struct.pack("!4s4sHH", socket.inet_aton(src[0]), socket.inet_aton(dst[0]), src[1], dst[1])
    return V2_HEADER.pack(V2_SIGNATURE, 0x21, fam, len(body)) + body


class ProxyLayer(StreamProtocol):
    """Reads a PROXY header from allowed sources, then hands the connection to the inner protocol."""

    def __init__(self, inner: StreamProtocol, sources: list[Network]) -> None:
        self.inner = inner
        self.sources = sources
        self.buffer = b""
        self.peer: Address = None
        self.local: Address = None
        self.waiting = False  # for a header

    @classmethod
    def factory(cls, inner: Callable[[], StreamProtocol], sources: list[Network]) -> Callable[[], ProxyLayer]:
        return lambda: cls(inner(), sources)

    def connection_made(self, peer: Address, local: Address) -> Reply:
        self.peer, self.local = peer, local
        if self._trusted(peer):
            self.waiting = True
            return Reply()
        return self.inner.connection_made(peer, local)

    def data_received(self, data: bytes) -> Reply | bytes:
        if not self.waiting:
            first = self.buffer == b""
            self.buffer = None  # type: ignore[assignment]  # past the first bytes: ordinary data from now on
            if first and (data.startswith(V1_PREFIX) or data.startswith(V2_SIGNATURE[:6])):
                # An untrusted client starting with a PROXY header is trying to forge its own address.
                log.warning("%s: PROXY header from an address not allowed to send one: refused", peer_name(self.peer))
                return Reply(close=True)
            return self.inner.data_received(data)
        self.buffer += data
        try:
            parsed = self._parse()
        except ProxyHeaderError as exc:
            log.warning("%s: %s; connection closed", peer_name(self.peer), exc)
            return Reply(close=True)
        if parsed is None:
            return Reply()
        (src, dst), rest = parsed
        self.waiting = False
        self.buffer = None  # type: ignore[assignment]
        first = self.inner.connection_made(src or self.peer, dst or self.local)
        if not rest or first.close or first.then is not None:
            return first
        more = as_reply(self.inner.data_received(rest))
        return Reply(
            first.send + more.send, more.close, more.then, more.alarm if more.alarm is not None else first.alarm
        )

    def _parse(self):
        buf = self.buffer
        if buf.startswith(V2_SIGNATURE[: len(buf)]) and len(buf) < 16:
            return None
        if buf.startswith(V2_SIGNATURE):
            length = V2_HEADER.unpack(buf[:16])[3]
            if len(buf) < 16 + length:
                return None
            return parse_v2(buf[:16], buf[16 : 16 + length]), buf[16 + length :]
        if not V1_PREFIX.startswith(buf[:6]):
            raise ProxyHeaderError("no PROXY header from a load balancer that must send one")
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("PROXY v1 line too long")
            return None
        return parse_v1(buf[:end]), buf[end + 2 :]

    def _trusted(self, peer: Address) -> bool:
        ip = peer_ip(peer)
        return ip is not None and any(ip in net for net in self.sources)

    def eof_received(self) -> Reply:
        return Reply(close=True) if self.waiting else self.inner.eof_received()

    def stop_requested(self) -> Reply:
        return Reply(close=True) if self.waiting else self.inner.stop_requested()

    def timed_out(self) -> Reply:
        return Reply(close=True) if self.waiting else self.inner.timed_out()

    def output_drained(self) -> Reply:
        return self.inner.output_drained()

    def connection_lost(self) -> None:
        self.inner.connection_lost()

    @property
    def wakeable(self) -> bool:  # type: ignore[override]
        return self.inner.wakeable

    def attach(self, handle) -> None:
        self.inner.attach(handle.mapped(None, self.inner))
