"""The zone `sockhop up` serves with no set-up, and `sockhop up` answering dig on port 5353."""

from __future__ import annotations

import subprocess
import time

import dns.rdatatype as T
import pytest

from sockhop.dns.authority import Authority
from sockhop.dns.builtin import DEFAULT_PORT, builtin_zone
from tests.support import require_tool
from tests.test_up import loopback_host


def test_builtin_zone_has_what_the_other_services_need():
    authority = Authority([builtin_zone()])

    def data(name, rdtype):
        return [rd.to_text() for rrset in authority.answer(dns_name(name), rdtype).answer for rd in rrset]

    assert data("sockhop.test.", T.MX) == ["10 mail.sockhop.test."]
    assert data("mail.sockhop.test.", T.A) == ["127.0.0.1"]
    assert data("www.sockhop.test.", T.AAAA) == ["::1"]
    assert any("spf1" in text for text in data("sockhop.test.", T.TXT))
    assert data("_smtp._tcp.sockhop.test.", T.SRV) == ["0 0 2525 mail.sockhop.test."]


def test_builtin_zone_points_at_the_address_up_listens_on():
    authority = Authority([builtin_zone("127.0.0.9")])

    def data(name, rdtype):
        return [rd.to_text() for rrset in authority.answer(dns_name(name), rdtype).answer for rd in rrset]

    assert data("mail.sockhop.test.", T.A) == data("www.sockhop.test.", T.A) == ["127.0.0.9"]
    assert data("mail.sockhop.test.", T.AAAA) == []  # nothing of up's listens on ::1 then
    assert data("sockhop.test.", T.MX) == ["10 mail.sockhop.test."]


def dns_name(text):
    import dns.name

    return dns.name.from_text(text)


@pytest.mark.interop
def test_sockhop_up_answers_dig(sockhop_server, tmp_path):
    dig = require_tool("dig")
    # a loopback address of its own, so the fixed ports of `sockhop up` cannot meet another test's
    host = loopback_host()
    server = sockhop_server(["up", "--host", host, "--data", str(tmp_path / "data")], announce=1)
    deadline = time.monotonic() + 30  # every service announces in turn (echo and web first): wait for dns's pair
    while not {("dns", "udp"), ("dns", "tcp")} <= set(server.addresses) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.address("dns", "udp") == server.address("dns", "tcp") == (host, DEFAULT_PORT)
    out = subprocess.run(
        [dig, f"@{host}", "-p", str(DEFAULT_PORT), "+time=5", "+tries=2", "sockhop.test", "MX"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "status: NOERROR" in out and "flags: qr aa" in out
    # the addresses follow where up listens, so mail.sockhop.test is up's own mail server
    assert "10 mail.sockhop.test." in out and f"mail.sockhop.test.\t300\tIN\tA\t{host}" in out
