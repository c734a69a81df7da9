"""MX routing asked of sockhop's own DNS server (``sockhop serve dns`` with a zone file): preference order, implicit
MX, null MX, no such domain, and the port an ``_smtp._tcp`` SRV record gives."""

from __future__ import annotations

import pytest

from sockhop.mail.mx import NoSuchDomain, RoutingError, host_addresses, mail_exchangers, mail_hops, mx_records
from tests.mail.dnszone import serve_zone

RECORDS = """\
example IN MX 20 mx2.example.test.
example IN MX 10 mx1.example.test.
mx1.example IN AAAA ::1
mx2.example IN A 127.0.0.1
nomx IN A 127.0.0.1
nullmx IN MX 0 .
srv IN MX 10 mail.srv.test.
mail.srv IN A 127.0.0.1
_smtp._tcp.srv IN SRV 0 0 2626 mail.srv.test.
"""


@pytest.fixture
def dns_server(sockhop_server, tmp_path):
    return serve_zone(sockhop_server, tmp_path, RECORDS)


def test_mx_records(dns_server):
    assert sorted(mx_records("example.test", dns_server)) == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert mx_records("nomx.test", dns_server) is None
    with pytest.raises(NoSuchDomain):
        mx_records("nowhere.test", dns_server)


def test_host_addresses(dns_server):
    assert host_addresses("mx1.example.test", dns_server) == ["::1"]
    assert host_addresses("mx2.example.test", dns_server) == ["127.0.0.1"]
    assert host_addresses("nowhere.test", dns_server) == []


def test_mail_exchangers_in_preference_order(dns_server):
    assert mail_exchangers("example.test", dns_server) == ["mx1.example.test", "mx2.example.test"]


def test_no_mx_means_the_domain_itself(dns_server):
    assert mail_exchangers("nomx.test", dns_server) == ["nomx.test"]
    assert mail_hops("nomx.test", dns_server) == [("127.0.0.1", 25, "nomx.test")]


def test_null_mx_takes_no_mail(dns_server):
    with pytest.raises(RoutingError, match="null MX"):
        mail_exchangers("nullmx.test", dns_server)


def test_port_from_srv_else_25_and_port_given_wins(dns_server):
    assert mail_hops("srv.test", dns_server) == [("127.0.0.1", 2626, "mail.srv.test")]
    assert mail_hops("example.test", dns_server) == [
        ("::1", 25, "mx1.example.test"),
        ("127.0.0.1", 25, "mx2.example.test"),
    ]
    assert mail_hops("srv.test", dns_server, port=2727) == [("127.0.0.1", 2727, "mail.srv.test")]


def test_no_dns_server_answering_is_a_routing_error(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(RoutingError, match="MX lookup failed"):
            mx_records("example.test", endpoint)
