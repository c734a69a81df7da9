"""Endpoints as people write them, resolved as the lecture says: with getaddrinfo.

Accepted forms: ``host:port``, ``[v6addr]:port``, ``:port`` (every interface, IPv4 and IPv6), a bare ``port``
(the same), and a service name in place of the number (``localhost:http``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

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
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise PortRangeError(f"port {port} is out of range: a port number is 0-65535")
        return port
    if text.startswith("-") and text[1:].isdigit():
        raise PortRangeError(f"port {text} is out of range: a port number is 0-65535")
    port = lookup_name(text, proto)
    if port is None:
        raise UnknownServiceError(f"unknown service name {text!r}: give a port number, or see `sockhop ports`")
    return port


def parse_endpoint(text: str, default_host: str = "", proto: str = "tcp") -> Endpoint:
    """Parse ``host:port``, ``[v6]:port``, ``:port`` or ``port``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"bad endpoint {text!r}: write an IPv6 address as [addr]:port")
        return Endpoint(host, parse_port(rest[1:], proto))
    if text.count(":") > 1:
        raise AddressError(f"bad endpoint {text!r}: write an IPv6 address in brackets, as [{text}]:port")
    host, sep, port = text.rpartition(":")
    if not sep:
        return Endpoint(default_host, parse_port(text, proto))
    return Endpoint(host, parse_port(port, proto))


def resolve(
    endpoint: Endpoint, kind: socket.SocketKind = socket.SOCK_STREAM, *, passive: bool = False
) -> list[tuple[socket.AddressFamily, tuple]]:
    """getaddrinfo for an endpoint: every (family, sockaddr) it names, duplicates removed, in the resolver's
    order. ``passive`` resolves for bind (an empty host means every interface)."""
    host = endpoint.host or None
    flags = socket.AI_PASSIVE if passive else socket.AI_ADDRCONFIG
    try:
        infos = socket.getaddrinfo(host, endpoint.port, socket.AF_UNSPEC, kind, 0, flags)
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
