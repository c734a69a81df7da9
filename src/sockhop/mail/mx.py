"""Where mail for a domain goes (RFC 5321 section 5.1): its MX records in preference order, or, when it has none,
the domain itself as an implicit MX with its A/AAAA records -- as Sendmail does. A null MX (RFC 7505: one record,
preference 0, exchange ".") means the domain takes no mail.

Every lookup goes through sockhop's own stub resolver (``sockhop.dns.resolve``), to ``--dns`` when given, else to
the system's name servers (/etc/resolv.conf).

The port: an MX record names a host, never a port, and real mail goes to port 25. sockhop's loopback world
(``sockhop up``) cannot bind 25 without privilege, so it publishes its port the way DNS publishes ports -- an SRV
record, ``_smtp._tcp.DOMAIN SRV 0 0 2525 mail.DOMAIN`` -- and the client honours it: an exchanger named as the
target of such a record is reached at that record's port. A domain without one (every real domain) gets 25, and
``sockhop send --port N`` overrides both.
"""

from __future__ import annotations

import socket

from sockhop.errors import SockhopError

DNS_TIMEOUT = 2.0  # per try; the resolver tries three times per server
SMTP_PORT = 25


class RoutingError(SockhopError):
    """Cannot find where to deliver mail for that domain."""


class NoSuchDomain(RoutingError):
    """The domain does not exist."""


class NullMX(RoutingError):
    """The domain says it takes no mail (RFC 7505)."""


def _bare(name: object) -> str:
    """A dnspython name as the text mail uses: no trailing dot, lower case."""
    return str(name).rstrip(".").lower()


def mx_records(domain: str, dns_server: str | None) -> list[tuple[int, str]] | None:
    """The MX records of ``domain`` as (preference, exchange) with the trailing dot removed; None when the domain
    exists but has no MX records. Raises NoSuchDomain (NXDOMAIN) or RoutingError (no usable answer)."""
    from sockhop.dns import NoSuchName, ResolveError, resolve

    try:
        records = resolve(domain, "MX", dns_server, timeout=DNS_TIMEOUT)
    except NoSuchName:
        raise NoSuchDomain(f"{domain}: no such domain") from None
    except ResolveError as exc:
        raise RoutingError(f"{domain}: MX lookup failed: {exc}") from None
    if not records:
        return None
    return [(rr.preference, _bare(rr.exchange) if str(rr.exchange) != "." else ".") for rr in records]


def srv_ports(domain: str, dns_server: str | None) -> dict[str, int]:
    """{exchanger: port} from ``_smtp._tcp.DOMAIN`` SRV records; empty when there are none (the usual case) or the
    lookup fails -- port 25 is then the answer, as for any MX."""
    from sockhop.dns import ResolveError, resolve

    try:
        records = resolve(f"_smtp._tcp.{domain}", "SRV", dns_server, timeout=DNS_TIMEOUT)
    except ResolveError:
        return {}
    ports: dict[str, int] = {}
    for rr in sorted(records, key=lambda r: (r.priority, -r.weight)):
        ports.setdefault(_bare(rr.target), rr.port)
    return ports


def host_addresses(host: str, dns_server: str | None) -> list[str]:
    """The IPv6 and IPv4 addresses of ``host``: from the system resolver (which knows /etc/hosts), or from
    ``dns_server`` when given (its names -- ``mail.sockhop.test`` -- are often unknown to the system)."""
    if dns_server is None:
        try:
            infos = socket.getaddrinfo(host, SMTP_PORT, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
    from sockhop.dns import ResolveError, resolve

    found: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            found.extend(rr.address for rr in resolve(host, rdtype, dns_server, timeout=DNS_TIMEOUT))
        except ResolveError:
            continue
    return found


def mail_exchangers(domain: str, dns_server: str | None = None) -> list[str]:
    """Hosts to try for ``domain``, best first: its MX records by preference, else the domain itself."""
    records = mx_records(domain, dns_server)
    if records is None:
        return [domain]  # RFC 5321 5.1: no MX -> the domain is its own, implicit MX (its A/AAAA)
    if len(records) == 1 and records[0][1] in ("", "."):
        raise NullMX(f"{domain}: the domain accepts no mail (null MX)")
    return [host for _, host in sorted(records, key=lambda r: r[0]) if host not in ("", ".")]


def mail_hops(domain: str, dns_server: str | None = None, port: int | None = None) -> list[tuple[str, int, str]]:
    """(address, port, exchanger) to try for ``domain``, best first: every address of every exchanger, each at
    ``port`` if given, else at the port an ``_smtp._tcp`` SRV record gives that exchanger, else 25."""
    exchangers = mail_exchangers(domain, dns_server)
    ports = srv_ports(domain, dns_server) if port is None else {}
    hops: list[tuple[str, int, str]] = []
    for host in exchangers:
        hop_port = port or ports.get(host.lower(), SMTP_PORT)
        hops.extend((address, hop_port, host) for address in host_addresses(host, dns_server))
    return hops
