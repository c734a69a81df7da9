"""Endpoints as people write them, resolved as the lecture says: with getaddrinfo.

Accepted forms: ``host:port``, ``[v6addr]:port``, ``:port`` (every interface, IPv4 and IPv6), a bare ``port``
(the same), and a service name in place of the number (``localhost:http``). Where the service's own port is
known (``default_port``), a host alone names it (``127.0.0.1``, ``[::1]``). Host names are checked before they
reach the resolver, so a malformed one is one line, and sends no query.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from encodings.idna import ToASCII

from sockhop.errors import AddressError, PortRangeError, UnknownHostError, UnknownServiceError
from sockhop.net.ports import lookup_name


@dataclass(frozen=True)
class Endpoint:
    """A host (empty: every interface) and a port (a number or a service name)."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_host_port(self.host, self.port) if self.host else f":{self.port}"


def parse_port(text: str, proto: str = "tcp") -> int:
    """A port number, or a service name from the system's services database (or sockhop's own table)."""
    text = text.strip()
    if not text:
        raise PortRangeError("missing port number")
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise PortRangeError(f"port {port} is out of range: a port number is 0-65535")
        return port
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise PortRangeError(f"port {text} is out of range: a port number is 0-65535")
    port = lookup_name(text, proto)
    if port is None:
        if text[0].isdigit() or text[0] in "+-":
            raise PortRangeError(f"port {text!r} is not a number: write it in decimal digits, 0-65535")
        raise UnknownServiceError(f"unknown service name {text!r}: give a port number, or see `sockhop ports`")
    return port


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")


def check_host(host: str) -> str:
    """``host`` as it is, if getaddrinfo can be given it: an IPv4 or IPv6 address, or a name DNS can carry.

    Checked here so that a malformed name is one plain line before any query leaves the machine -- left to the
    resolver it is a query for nothing, or the IDNA codec's traceback (``a..b``, a label over 63 characters).
    An empty host passes: for a listener it means every interface."""
    if not host:
        return host
    if ":" in host:
        address = host.partition("%")[0]  # fe80::1%eth0: the zone is the system's to check
        try:
            socket.inet_pton(socket.AF_INET6, address)
        except (OSError, ValueError):
            raise AddressError(f"bad IPv6 address {host!r}") from None
        return host
    name = host[:-1] if host.endswith(".") and host != "." else host
    labels = name.split(".")
    if labels[-1].isascii() and labels[-1].isdigit():  # no top-level domain is all digits: an IPv4 address
        try:
            socket.inet_aton(name)
        except (OSError, ValueError):
            raise AddressError(f"bad IPv4 address {host!r}: write four numbers 0-255, as 127.0.0.1") from None
        return host
    for label in labels:
        _check_label(host, label)
    if len(name.encode("idna")) > 253:
        raise AddressError(f"bad host name {host[:40]!r}...: a name is at most 253 characters")
    return host


def _check_label(host: str, label: str) -> None:
    """One label of a host name: 1-63 characters, letters, digits and inner hyphens, or an international name."""
    if not label:
        raise AddressError(f"bad host name {host!r}: an empty label (a dot at the start, or two dots together)")
    if not label.isascii():
        try:
            label = ToASCII(label).decode("ascii")
        except UnicodeError:
            raise AddressError(f"bad host name {host!r}: {label!r} is not a valid international name") from None
    if len(label) > 63:
        raise AddressError(f"bad host name {host!r}: the label {label[:20]}... is longer than 63 characters")
    if label[:4].lower() == "xn--":  # punycode: must decode, to something that encodes back the same
        try:
            decoded = label[4:].encode("ascii").decode("punycode")
            valid = not decoded.isascii() and ToASCII(decoded).decode("ascii").lower() == label.lower()
        except UnicodeError:
            valid = False
        if not valid:
            raise AddressError(f"bad host name {host!r}: {label!r} is not a valid international (punycode) label")
        return
    if not _LABEL.fullmatch(label):
        raise AddressError(
            f"bad host name {host!r}: a name is letters, digits and hyphens between dots (no hyphen at either end)"
        )


def parse_host(text: str) -> str:
    """A host as a client is given it: a name, an IPv4 address, or an IPv6 address with or without brackets
    (``[::1]`` as endpoints write it). Raises AddressError with one line saying what is wrong."""
    host = text.strip()
    if host.startswith("["):
        if not host.endswith("]"):
            raise AddressError(f"bad host {text!r}: an IPv6 address in brackets needs the closing ], as [::1]")
        host = host[1:-1]
        if ":" not in host:
            raise AddressError(f"bad host {text!r}: brackets are for IPv6 addresses, as [::1]")
    if not host:
        raise AddressError("no host given: write a name or an address, such as 127.0.0.1 or ::1")
    return check_host(host)


def parse_endpoint(
    text: str, default_host: str = "", proto: str = "tcp", *, default_port: int | None = None
) -> Endpoint:
    """Parse ``host:port``, ``[v6]:port``, ``:port`` or ``port``; with ``default_port`` (the service's own), a
    host alone too (``127.0.0.1``, ``[::1]``, ``localhost``)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise AddressError(f"bad endpoint {text!r}: the IPv6 address needs its closing ], as [::1]:port")
        if ":" not in host:
            raise AddressError(f"bad endpoint {text!r}: brackets are for IPv6 addresses, as [::1]:port")
        host = check_host(host)
        if not rest and default_port is not None:
            return Endpoint(host, default_port)
        if not rest:
            raise AddressError(f"bad endpoint {text!r}: no port; write {text}:PORT")
        if not rest.startswith(":"):
            raise AddressError(f"bad endpoint {text!r}: write an IPv6 address as [addr]:port")
        return Endpoint(host, parse_port(rest[1:], proto))
    if text.count(":") > 1:
        raise AddressError(f"bad endpoint {text!r}: write an IPv6 address in brackets, as [{text}]:port")
    host, sep, port = text.rpartition(":")
    if sep:
        return Endpoint(check_host(host), parse_port(port, proto))
    if not text or (text.isascii() and text.isdigit()) or text.startswith("-"):
        return Endpoint(default_host, parse_port(text, proto))
    # One word: a port given by its service name, or a host without a port.
    looks_like_host = "." in text or (text.isascii() and text.isdigit())
    if not looks_like_host and lookup_name(text, proto) is not None:
        return Endpoint(default_host, parse_port(text, proto))
    host = check_host(text)
    if default_port is None:
        raise AddressError(f"bad endpoint {text!r}: no port; write {text}:PORT (or :PORT for every interface)")
    return Endpoint(host, default_port)


def resolve(
    endpoint: Endpoint, kind: socket.SocketKind = socket.SOCK_STREAM, *, passive: bool = False
) -> list[tuple[socket.AddressFamily, tuple]]:
    """getaddrinfo for an endpoint: every (family, sockaddr) it names, duplicates removed, in the resolver's
    order. ``passive`` resolves for bind (an empty host means every interface)."""
    host = check_host(endpoint.host) or None
    flags = socket.AI_PASSIVE if passive else socket.AI_ADDRCONFIG
    try:
        infos = socket.getaddrinfo(host, endpoint.port, socket.AF_UNSPEC, kind, 0, flags)
    except UnicodeError:  # what check_host missed: the IDNA codec's complaint, not its traceback
        raise AddressError(f"bad host name {endpoint.host!r}: it cannot be encoded for DNS") from None
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", -5)):
            raise UnknownHostError(f"unknown host {endpoint.host!r}: {exc.strerror}") from None
        raise AddressError(f"cannot resolve {endpoint}: {exc.strerror}") from None
    seen: list[tuple[socket.AddressFamily, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    if not seen:
        raise UnknownHostError(f"unknown host {endpoint.host!r}: no IPv4 or IPv6 address")
    return seen


def format_host(host: str) -> str:
    """A host as it stands before ``:port`` in an endpoint or a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def format_host_port(host: str, port: int | str) -> str:
    """``host:port``, with IPv6 hosts in brackets, as endpoints and URLs write them -- the one place that does."""
    return f"{format_host(host)}:{port}"


def format_address(addr: tuple) -> str:
    """A socket address (``(host, port)``, or IPv6's four-tuple) as ``host:port``."""
    return format_host_port(addr[0], addr[1])


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A host as an IP address to match against networks: an IPv6 zone index (``%eth0``) dropped, an IPv4-mapped
    address (``::ffff:192.0.2.1``, a dual-stack socket's IPv4 peer) as the IPv4 address it maps; None if it is not
    an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def peer_ip(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A socket peer's (``(host, port, ...)`` as the socket module reports it) IP address, as ``host_ip`` gives it;
    None for a peer with none (a Unix socket's)."""
    try:
        host = str(peer[0])  # type: ignore[index]
    except (TypeError, IndexError):
        return None
    return host_ip(host)
