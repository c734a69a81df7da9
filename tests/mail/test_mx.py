"""MX routing against a DNS responder on loopback: preference order, implicit MX, null MX, no such domain."""

from __future__ import annotations

import pytest

from sockhop.mail.mx import NoSuchDomain, RoutingError, _address_lookup, _mx_lookup, mail_exchangers
from tests.mail.dnsstub import DNSStub

RECORDS = {
    ("example.test.", "MX"): ["20 mx2.example.test.", "10 mx1.example.test."],
    ("mx1.example.test.", "AAAA"): ["::1"],
    ("mx2.example.test.", "A"): ["127.0.0.1"],
    ("nomx.test.", "A"): ["127.0.0.1"],
    ("nullmx.test.", "MX"): ["0 ."],
}


@pytest.fixture
def dns_server():
    with DNSStub(RECORDS) as stub:
        yield stub.endpoint


def test_mx_lookup(dns_server):
    assert sorted(_mx_lookup("example.test", dns_server)) == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert _mx_lookup("nomx.test", dns_server) is None
    with pytest.raises(NoSuchDomain):
        _mx_lookup("nowhere.test", dns_server)


def test_address_lookup(dns_server):
    assert _address_lookup("mx1.example.test", dns_server) == ["::1"]
    assert _address_lookup("mx2.example.test", dns_server) == ["127.0.0.1"]
    assert _address_lookup("nowhere.test", dns_server) == []


def test_mail_exchangers_in_preference_order(dns_server):
    assert mail_exchangers("example.test", dns_server) == ["mx1.example.test", "mx2.example.test"]


def test_no_mx_means_the_domain_itself(dns_server):
    assert mail_exchangers("nomx.test", dns_server) == ["nomx.test"]


def test_null_mx_takes_no_mail(dns_server):
    with pytest.raises(RoutingError, match="null MX"):
        mail_exchangers("nullmx.test", dns_server)
