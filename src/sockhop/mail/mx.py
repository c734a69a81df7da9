"""Where mail for a domain goes (RFC 5321 section 5.1): its MX records in preference order, or, when it has none,
the domain itself as an implicit MX with its A/AAAA records -- as Sendmail does. A null MX (RFC 7505: one record,
preference 0, exchange ".") means the domain takes no mail.

The two lookups that touch DNS, ``_mx_lookup`` and ``_address_lookup``, use dnspython directly and are kept in
one place each, so they can be swapped for sockhop's own resolver (``sockhop.dns.resolve``) without touching the
rest.
"""

from __future__ import annotations

import socket

import dns.exception
import dns.resolver

from sockhop.errors import SockhopError
from sockhop.net.addresses import Endpoint, parse_endpoint

DNS_TIMEOUT = 5.0


class RoutingError(SockhopError):
    """Cannot find where to deliver mail for that domain."""


class NoSuchDomain(RoutingError):
    """The domain does not exist."""


def parse_dns_server(text: str) -> Endpoint:
    """``127.0.0.1:5353``, ``[::1]:53`` or a bare address (port 53)."""
    if text.startswith("[") or text.count(":") == 1:
        return parse_endpoint(text, proto="udp")
    if ":" in text:  # a bare IPv6 address
        return Endpoint(text, 53)
    return Endpoint(text, 53)


def _resolver(dns_server: str | None) -> dns.resolver.Resolver:
    if dns_server is None:
        resolver = dns.resolver.Resolver()
    else:
        endpoint = parse_dns_server(dns_server)
        resolver = dns.resolver.Resolver(configure=False)
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise RoutingError(f"unknown DNS server {endpoint.host!r}: {exc.strerror}") from None
        resolver.nameservers = [infos[0][4][0]]
        resolver.port = endpoint.port
    resolver.lifetime = DNS_TIMEOUT
    return resolver


def _mx_lookup(domain: str, dns_server: str | None) -> list[tuple[int, str]] | None:
    """The MX records of ``domain`` as (preference, exchange) with the trailing dot removed; None when the domain
    exists but has no MX records. Raises NoSuchDomain (NXDOMAIN) or RoutingError (no answer at all)."""
    try:
        answer = _resolver(dns_server).resolve(domain, "MX", search=False)
    except dns.resolver.NXDOMAIN:
        raise NoSuchDomain(f"{domain}: no such domain") from None
    except dns.resolver.NoAnswer:
        return None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise RoutingError(f"{domain}: MX lookup failed: {exc}") from None
    return [(rr.preference, rr.exchange.to_text(omit_final_dot=True)) for rr in answer]


def _address_lookup(host: str, dns_server: str | None) -> list[str]:
    """The IPv6 and IPv4 addresses of ``host``: from the system resolver, or from ``dns_server`` when given (its
    names -- ``mail.sockhop.test`` -- are often unknown to the system)."""
    if dns_server is None:
        try:
            infos = socket.getaddrinfo(host, 25, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        return list(dict.fromkeys(info[4][0] for info in infos))
    resolver = _resolver(dns_server)
    found: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            answer = resolver.resolve(host, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
            continue
        found.extend(rr.address for rr in answer)
    return found


def mail_exchangers(domain: str, dns_server: str | None = None) -> list[str]:
    """Hosts to try for ``domain``, best first: its MX records by preference, else the domain itself."""
    records = _mx_lookup(domain, dns_server)
    if records is None:
        return [domain]  # RFC 5321 5.1: no MX -> the domain is its own, implicit MX (its A/AAAA)
    if len(records) == 1 and records[0][1] in ("", "."):
        raise RoutingError(f"{domain}: the domain accepts no mail (null MX)")
    return [host for _, host in sorted(records, key=lambda r: r[0]) if host not in ("", ".")]


def addresses(host: str, dns_server: str | None = None) -> list[str]:
    return _address_lookup(host, dns_server)
