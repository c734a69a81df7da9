"""Knowing what port number to use: well-known, registered and dynamic ports, and this machine's ephemeral range.

Names come from the system's services database (``/etc/services`` through getservbyname); a built-in table covers
every port the lecture names, so ``sockhop ports`` works where that database is missing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

# (name, port, protocols, what it is for) -- the lecture's ports first, then the ones sockhop itself serves.
BUILTIN: tuple[tuple[str, int, str, str], ...] = (
    ("echo", 7, "tcp/udp", "echo: send back what arrives (RFC 862)"),
    ("ftp-data", 20, "tcp", "ftp protocol, data"),
    ("ftp", 21, "tcp", "ftp protocol, control"),
    ("ssh", 22, "tcp", "secure shell"),
    ("telnet", 23, "tcp", "telnet protocol"),
    ("smtp", 25, "tcp", "mail transfer (Sendmail, Postfix)"),
    ("domain", 53, "tcp/udp", "domain name system (BIND)"),
    ("http", 80, "tcp", "world wide web (Apache, nginx)"),
    ("pop3", 110, "tcp", "post office protocol 3"),
    ("ntp", 123, "udp", "network time protocol"),
    ("imap", 143, "tcp", "internet message access protocol"),
    ("nsiiops", 261, "tcp", "IIOP name service over TLS/SSL"),
    ("https", 443, "tcp", "http protocol over TLS/SSL"),
    ("submissions", 465, "tcp", "mail submission over TLS/SSL (SMTPS)"),
    ("submission", 587, "tcp", "mail submission"),
    ("domain-s", 853, "tcp", "DNS over TLS"),
    ("ftps-data", 989, "tcp", "ftp protocol, data, over TLS/SSL"),
    ("ftps", 990, "tcp", "ftp protocol, control, over TLS/SSL"),
    ("telnets", 992, "tcp", "telnet protocol over TLS/SSL"),
    ("imaps", 993, "tcp", "imap4 protocol over TLS/SSL"),
    ("ircs", 994, "tcp", "irc protocol over TLS/SSL"),
    ("pop3s", 995, "tcp", "pop3 protocol over TLS/SSL"),
    ("submission-alt", 2525, "tcp", "mail submission, unprivileged (sockhop up)"),
    ("mdns", 5353, "udp", "multicast DNS; sockhop up's DNS"),
    ("http-alt", 8080, "tcp", "http, unprivileged (sockhop up)"),
)

WELL_KNOWN = range(0, 1024)
REGISTERED = range(1024, 49152)
DYNAMIC = range(49152, 65536)


@dataclass(frozen=True)
class PortInfo:
    port: int
    names: tuple[str, ...]
    protocols: str
    description: str
    range_name: str
    ephemeral: bool


def range_of(port: int) -> str:
    """The IANA range a port is in, and what it means for who may bind it."""
    if port in WELL_KNOWN:
        return "well-known (0-1023, binding needs privilege)"
    if port in REGISTERED:
        return "registered (1024-49151)"
    return "dynamic (49152-65535)"


def ephemeral_range() -> tuple[int, int]:
    """The range this machine picks clients' ephemeral ports from (Linux's ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return DYNAMIC.start, DYNAMIC.stop - 1


def unprivileged_start() -> int:
    """The lowest port an unprivileged process may bind (Linux's ip_unprivileged_port_start)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def lookup_name(name: str, proto: str = "tcp") -> int | None:
    """The port of a service name: the system's database first, then the built-in table."""
    try:
        return socket.getservbyname(name, proto)
    except OSError:
        pass
    for entry_name, port, protos, _ in BUILTIN:
        if entry_name == name.lower() and proto in protos:
            return port
    for entry_name, port, _, _ in BUILTIN:
        if entry_name == name.lower():
            return port
    return None


def info(port: int) -> PortInfo:
    """Everything sockhop knows about a port number."""
    names: list[str] = []
    protocols: list[str] = []
    description = ""
    for entry_name, entry_port, protos, desc in BUILTIN:
        if entry_port == port:
            names.append(entry_name)
            protocols.extend(p for p in protos.split("/") if p not in protocols)
            description = description or desc
    for proto in ("tcp", "udp"):
        try:
            name = socket.getservbyport(port, proto)
        except OSError:
            continue
        if name not in names:
            names.append(name)
        if proto not in protocols:
            protocols.append(proto)
    low, high = ephemeral_range()
    return PortInfo(
        port=port,
        names=tuple(names),
        protocols="/".join(sorted(protocols)),
        description=description,
        range_name=range_of(port),
        ephemeral=low <= port <= high,
    )


def query(text: str) -> PortInfo:
    """A port given as a number or a service name."""
    from sockhop.net.addresses import parse_port  # addresses imports this module

    return info(parse_port(text))


def describe(p: PortInfo) -> str:
    """A few lines for one port, for `sockhop ports NAME`."""
    low, high = ephemeral_range()
    lines = [
        f"port {p.port}: {', '.join(p.names) or '(no registered name)'}" + (f" ({p.protocols})" if p.protocols else ""),
    ]
    if p.description:
        lines.append(f"  for: {p.description}")
    lines.append(f"  range: {p.range_name}")
    if p.port < unprivileged_start():
        lines.append("  binding it needs root or CAP_NET_BIND_SERVICE")
    lines.append(
        f"  this machine's ephemeral range is {low}-{high}: "
        + ("clients may be given this port" if p.ephemeral else "clients are not given this port")
    )
    return "\n".join(lines)


def table() -> str:
    """The built-in table with ranges, for `sockhop ports` with no argument."""
    low, high = ephemeral_range()
    rows = [f"{'port':>5}  {'name':<15} {'proto':<8} {'range':<12} for"]
    for name, port, protos, desc in BUILTIN:
        rows.append(f"{port:>5}  {name:<15} {protos:<8} {range_of(port).split(' ')[0]:<12} {desc}")
    rows.append("")
    rows.append("well-known 0-1023 (binding needs privilege), registered 1024-49151, dynamic 49152-65535;")
    rows.append(f"this machine gives clients ephemeral ports from {low}-{high}.")
    return "\n".join(rows)
