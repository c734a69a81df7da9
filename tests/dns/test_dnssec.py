"""Serving a pre-signed zone (RFC 4033-4035, 5155), judged by software nobody here wrote: NSD serving the same file
signed by ldns-signzone, query by query with DO set (NSEC, NSEC3 and NSEC3 with opt-out); Unbound validating with
a trust anchor (AD set; a tampered record SERVFAIL); delv. And sans-IO: no DNSSEC records without DO, TC when the
signed answer does not fit, the reply cache keyed on DO."""

from __future__ import annotations

import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockhop.dns.protocol import DnsDatagram
from sockhop.dns.server import NameServer
from sockhop.dns.zone import read_zone_file
from tests.dns.peers import start_nsd
from tests.dns.signed import QUESTIONS, anchor, sign, start_unbound, validated
from tests.support import end_process, require_tool

pytestmark = pytest.mark.interop
DNSSEC_TYPES = {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.DS}
PEER = ("127.0.0.1", 5300)


def comparable(section) -> list[tuple]:
    return sorted((str(r.name).lower(), r.rdtype, r.covers, r.ttl, sorted(rd.to_text() for rd in r)) for r in section)


def serve(sockhop_server, zone, *extra):
    server = sockhop_server(
        ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", "eventloop", *extra], announce=2
    )
    return server.address("dns", "udp")[1]


@pytest.mark.parametrize("denial", ["nsec", "nsec3", "optout"])
def test_answers_as_nsd_does_with_do(sockhop_server, tmp_path, denial):
    zone, _ = sign(tmp_path, nsec3=denial != "nsec", optout=denial == "optout")
    proc, nsd = start_nsd(tmp_path, f'    zonefile: "{zone}"\n')
    try:
        port = serve(sockhop_server, zone)
        for name, rdtype in QUESTIONS:
            query = dns.message.make_query(name, rdtype, want_dnssec=True)
            query.flags &= ~dns.flags.RD  # a resolver's question
            theirs = dns.query.tcp(query, "127.0.0.1", port=nsd, timeout=5)
            ours = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
            assert ours.rcode() == theirs.rcode(), (name, rdtype)
            assert ours.flags & dns.flags.AA == theirs.flags & dns.flags.AA, (name, rdtype)
            assert ours.ednsflags & dns.flags.DO
            for section in ("answer", "authority", "additional"):
                assert comparable(getattr(ours, section)) == comparable(getattr(theirs, section)), (name, section)
    finally:
        end_process(proc)


@pytest.mark.parametrize("denial", ["nsec", "nsec3"])
def test_unbound_validates_and_rejects_a_tampered_record(sockhop_server, tmp_path, denial):
    zone, key = sign(tmp_path / "zone", nsec3=denial == "nsec3")
    port = serve(sockhop_server, zone)
    proc, resolver = start_unbound(tmp_path / "unbound", anchor(tmp_path / "zone", key), port)
    try:
        for name, rdtype, rcode in [
            ("www.example.com", "A", dns.rcode.NOERROR),
            ("nope.example.com", "A", dns.rcode.NXDOMAIN),
            ("www.example.com", "MX", dns.rcode.NOERROR),
            ("x.wild.example.com", "A", dns.rcode.NOERROR),
            ("x.wild.example.com", "MX", dns.rcode.NOERROR),
            ("b.c.example.com", "A", dns.rcode.NOERROR),
            ("secure.example.com", "DS", dns.rcode.NOERROR),
            ("sub.example.com", "DS", dns.rcode.NOERROR),
        ]:
            reply = validated(resolver, name, rdtype)
            assert reply.rcode() == rcode, (name, rdtype, reply)
            assert reply.flags & dns.flags.AD, (name, rdtype, reply)
    finally:
        end_process(proc)
    # the same zone with one record changed after signing: its signature no longer holds
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    text = zone.read_text().replace("192.0.2.2", "192.0.2.222")
    assert "192.0.2.222" in text
    (tampered / "example.com").write_text(text)
    port = serve(sockhop_server, tampered / "example.com")
    proc, resolver = start_unbound(tmp_path / "unbound2", anchor(tmp_path / "zone", key), port)
    try:
        assert validated(resolver, "www.example.com", "A").rcode() == dns.rcode.SERVFAIL
        good = validated(resolver, "mail.example.com", "A")
        assert good.rcode() == dns.rcode.NOERROR and good.flags & dns.flags.AD
    finally:
        end_process(proc)


def test_delv_validates_with_the_anchor(sockhop_server, tmp_path):
    delv = require_tool("delv")
    zone, key = sign(tmp_path, nsec3=True)
    port = serve(sockhop_server, zone)
    dnskey = anchor(tmp_path, key).split()
    flags, protocol, algorithm, material = dnskey[3], dnskey[4], dnskey[5], "".join(dnskey[6:])
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(f'trust-anchors {{ example.com. static-key {flags} {protocol} {algorithm} "{material}"; }};\n')
    for name, expect in [("www.example.com", "192.0.2.2"), ("nope.example.com", "ncache nxdomain")]:
        out = subprocess.run(
            [delv, "@127.0.0.1", "-p", str(port), "-a", str(anchors), "+root=example.com", name, "A"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        text = out.stdout + out.stderr
        assert "fully validated" in text and expect in text, text


def test_expired_signatures_and_a_wrong_dnskey_load_with_one_warning_each(sockhop_server, tmp_path):
    expired, _ = sign(tmp_path / "expired", extra=("-i", "20190101000000", "-e", "20200101000000"))
    good, key = sign(tmp_path / "mismatch")
    _, other = sign(tmp_path / "other")
    lines = [line for line in good.read_text().splitlines() if "\tDNSKEY\t" not in line]
    good.write_text("\n".join([*lines, anchor(tmp_path / "other", other)]) + "\n")
    for zone, words in [(expired, "signatures have expired"), (good, "which no DNSKEY of the zone has")]:
        server = sockhop_server(
            ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", "iterative"], announce=2
        )
        warnings = [line for line in server.lines if "WARNING" in line or "warning" in line]
        assert len(warnings) == 1 and words in warnings[0], server.lines
        reply = dns.query.udp(
            dns.message.make_query("www.example.com", "A", want_dnssec=True), "127.0.0.1",
            port=server.address("dns", "udp")[1], timeout=5,
        )  # fmt: skip
        assert reply.rcode() == dns.rcode.NOERROR and len(reply.answer) == 2


# -- sans-IO ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_server(tmp_path_factory) -> NameServer:
    folder = tmp_path_factory.mktemp("signed")
    zone, _ = sign(folder, nsec3=True)
    return NameServer([read_zone_file(zone)])


def ask(server, name, rdtype, *, dnssec, payload=1232, tcp=False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=dnssec, use_edns=0, payload=payload)
    if tcp:
        return dns.message.from_wire(server.respond(query.to_wire(), PEER, tcp=True))
    (reply,) = DnsDatagram(server).datagram_received(query.to_wire(), PEER)
    return dns.message.from_wire(reply)


def test_without_do_no_dnssec_records(signed_server):
    for name, rdtype in QUESTIONS:
        if rdtype in ("DS", "DNSKEY"):
            continue
        reply = ask(signed_server, name, rdtype, dnssec=False)
        records = [*reply.answer, *reply.authority, *reply.additional]
        assert not [r for r in records if r.rdtype in DNSSEC_TYPES], (name, rdtype)
        assert not reply.ednsflags & dns.flags.DO


def test_tc_when_the_signed_answer_does_not_fit(signed_server):
    small = ask(signed_server, "nope.example.com", "A", dnssec=True, payload=512)
    assert small.flags & dns.flags.TC and not small.authority
    plain = ask(signed_server, "nope.example.com", "A", dnssec=False, payload=512)
    assert not plain.flags & dns.flags.TC
    whole = ask(signed_server, "nope.example.com", "A", dnssec=True, payload=512, tcp=True)
    assert not whole.flags & dns.flags.TC
    assert len([r for r in whole.authority if r.rdtype == dns.rdatatype.NSEC3]) == 3


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.tuples(st.sampled_from(QUESTIONS), st.booleans()), min_size=1, max_size=12),
)
def test_the_reply_cache_keys_on_do(signed_server, order):
    """Whatever the order of questions with and without DO, each gets its own kind of answer from the cache."""
    for (name, rdtype), dnssec in order:
        reply = ask(signed_server, name, rdtype, dnssec=dnssec)
        has_sigs = any(r.rdtype == dns.rdatatype.RRSIG for r in [*reply.answer, *reply.authority])
        assert has_sigs == dnssec, (name, rdtype, dnssec)
