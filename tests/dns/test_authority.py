"""Every kind of authoritative answer, asked of the authority directly (no wire format)."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdatatype as T
import pytest

from sockhop.dns.authority import Authority
from sockhop.dns.zone import read_zone_text
from tests.dns.zones import EXAMPLE, EXAMPLE_ORG

N = dns.name.from_text
R = dns.rcode.Rcode


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority([read_zone_text(EXAMPLE, "example.com"), read_zone_text(EXAMPLE_ORG, "example.org")])


def ask(authority, name, rdtype, **kw):
    return authority.answer(N(name), rdtype, **kw)


def texts(section):
    return [(str(r.name), T.to_text(r.rdtype), sorted(rd.to_text() for rd in r)) for r in section]


def test_plain_answer_is_authoritative(authority):
    a = ask(authority, "www.example.com.", T.A)
    assert (a.rcode, a.authoritative) == (R.NOERROR, True)
    assert texts(a.answer) == [("www.example.com.", "A", ["192.0.2.2"])]
    assert a.authority == a.additional == []


def test_names_are_case_insensitive(authority):
    assert texts(ask(authority, "WwW.ExAmPlE.CoM.", T.AAAA).answer)[0][2] == ["2001:db8::2"]


@pytest.mark.parametrize(
    ("owner", "rdtype", "data"),
    [
        ("caa.example.com.", T.CAA, '0 issue "letsencrypt.org"'),
        ("ptr.example.com.", T.PTR, "www.example.com."),
        ("_sip._tcp.example.com.", T.SRV, "10 5 5060 www.example.com."),
    ],
)
def test_other_types(authority, owner, rdtype, data):
    a = ask(authority, owner, rdtype)
    assert (a.rcode, a.authoritative) == (R.NOERROR, True)
    assert texts(a.answer) == [(owner, T.to_text(rdtype), [data])]  # the whole record: owner, type, every field
    assert a.authority == []
    target = [("www.example.com.", "A", ["192.0.2.2"]), ("www.example.com.", "AAAA", ["2001:db8::2"])]
    assert texts(a.additional) == (target if rdtype == T.SRV else [])  # an SRV brings its target's addresses


def test_mx_brings_the_exchange_address(authority):
    a = ask(authority, "example.com.", T.MX)
    assert texts(a.answer) == [("example.com.", "MX", ["10 mail.example.com."])]
    assert texts(a.additional) == [("mail.example.com.", "A", ["192.0.2.3"])]


def test_cname_chain_followed_inside_the_zone(authority):
    a = ask(authority, "chain.example.com.", T.A)
    assert [(n, t) for n, t, _ in texts(a.answer)] == [
        ("chain.example.com.", "CNAME"),
        ("alias.example.com.", "CNAME"),
        ("www.example.com.", "A"),
    ]
    assert a.rcode == R.NOERROR and a.authoritative


def test_cname_itself_when_asked(authority):
    a = ask(authority, "alias.example.com.", T.CNAME)
    assert texts(a.answer) == [("alias.example.com.", "CNAME", ["www.example.com."])]


def test_cname_out_of_zone_stops_there(authority):
    a = ask(authority, "out.example.com.", T.A)
    assert texts(a.answer) == [("out.example.com.", "CNAME", ["www.example.net."])]
    assert a.rcode == R.NOERROR


def test_cname_loop_ends(authority):
    a = ask(authority, "loop1.example.com.", T.A)
    assert len(a.answer) == 2


def test_dangling_cname_is_nxdomain_with_the_cname(authority):
    a = ask(authority, "dangling.example.com.", T.A)
    assert a.rcode == R.NXDOMAIN  # RFC 6604: the rcode of the last name in the chain
    assert texts(a.answer)[0][1] == "CNAME"
    assert texts(a.authority)[0][1] == "SOA"


def test_nxdomain_has_soa_with_negative_ttl(authority):
    a = ask(authority, "nope.example.com.", T.A)
    assert (a.rcode, a.authoritative, a.answer) == (R.NXDOMAIN, True, [])
    (soa,) = a.authority
    assert soa.rdtype == T.SOA and soa.ttl == 300  # min(SOA TTL 3600, MINIMUM 300)


def test_nodata_has_soa(authority):
    a = ask(authority, "www.example.com.", T.MX)
    assert (a.rcode, a.answer) == (R.NOERROR, [])
    assert texts(a.authority)[0][1] == "SOA"


def test_empty_non_terminal_is_nodata_not_nxdomain(authority):
    a = ask(authority, "b.c.example.com.", T.A)
    assert (a.rcode, a.answer) == (R.NOERROR, [])
    assert texts(a.authority)[0][1] == "SOA"


def test_wildcard_synthesizes_under_the_name_asked(authority):
    a = ask(authority, "anything.wild.example.com.", T.A)
    assert texts(a.answer) == [("anything.wild.example.com.", "A", ["192.0.2.9"])]
    assert a.authoritative
    deeper = ask(authority, "x.y.wild.example.com.", T.TXT)  # RFC 4592: matches more than one label
    assert texts(deeper.answer) == [("x.y.wild.example.com.", "TXT", ['"wild"'])]


def test_wildcard_nodata(authority):
    a = ask(authority, "anything.wild.example.com.", T.MX)
    assert (a.rcode, a.answer) == (R.NOERROR, [])
    assert texts(a.authority)[0][1] == "SOA"


def test_existing_name_blocks_the_wildcard(authority):
    a = ask(authority, "sub.wild.example.com.", T.TXT)  # sub.wild exists: NODATA, not the wildcard's TXT
    assert (a.rcode, a.answer) == (R.NOERROR, [])
    below = ask(authority, "x.sub.wild.example.com.", T.A)  # closest encloser sub.wild has no * child
    assert below.rcode == R.NXDOMAIN


def test_wildcard_cname_is_followed(authority):
    a = ask(authority, "foo.cwild.example.com.", T.A)
    assert texts(a.answer) == [
        ("foo.cwild.example.com.", "CNAME", ["www.example.com."]),
        ("www.example.com.", "A", ["192.0.2.2"]),
    ]


def test_referral_below_a_delegation(authority):
    for name in ("sub.example.com.", "host.deep.sub.example.com."):
        a = ask(authority, name, T.A)
        assert (a.rcode, a.authoritative, a.answer) == (R.NOERROR, False, [])
        assert texts(a.authority) == [("sub.example.com.", "NS", ["ns.elsewhere.net.", "ns.sub.example.com."])]
        assert texts(a.additional) == [("ns.sub.example.com.", "A", ["192.0.2.53"])]  # glue, in-zone only


def test_ds_at_the_cut_is_the_parents(authority):
    a = ask(authority, "sub.example.com.", T.DS)
    assert a.authoritative and texts(a.authority)[0][1] == "SOA"


def test_outside_every_zone_is_refused(authority):
    for name in ("example.net.", "com.", "."):
        a = ask(authority, name, T.A)
        assert (a.rcode, a.authoritative) == (R.REFUSED, False)


def test_second_zone(authority):
    assert texts(ask(authority, "ns.example.org.", T.A).answer)[0][2] == ["192.0.2.100"]


def test_any_is_minimal_over_udp_and_whole_over_tcp(authority):
    udp = ask(authority, "example.com.", T.ANY)
    assert len(udp.answer) == 1  # RFC 8482
    tcp = ask(authority, "example.com.", T.ANY, tcp=True)
    assert {T.to_text(r.rdtype) for r in tcp.answer} == {"SOA", "NS", "MX", "TXT"}


# -- DNAME (RFC 6672) -----------------------------------------------------------------------------------------------
def test_dname_substitutes_and_follows_inside_the_zone(authority):
    a = ask(authority, "x.old.example.com.", T.A)
    assert (a.rcode, a.authoritative) == (R.NOERROR, True)
    assert texts(a.answer) == [
        ("old.example.com.", "DNAME", ["new.example.com."]),
        ("x.old.example.com.", "CNAME", ["x.new.example.com."]),
        ("x.new.example.com.", "A", ["192.0.2.99"]),
    ]
    nx = ask(authority, "y.old.example.com.", T.A)
    assert nx.rcode == R.NXDOMAIN and [r.rdtype for r in nx.answer] == [T.DNAME, T.CNAME]
    out = ask(authority, "a.b.out2.example.com.", T.A)  # leaves the zone: the client follows the CNAME
    assert texts(out.answer)[1] == ("a.b.out2.example.com.", "CNAME", ["a.b.example.net."])


def test_the_dname_owner_answers_normally(authority):
    assert texts(ask(authority, "old.example.com.", T.DNAME).answer) == [
        ("old.example.com.", "DNAME", ["new.example.com."])
    ]
    assert ask(authority, "old.example.com.", T.A).answer == []  # NODATA at the owner itself


def test_dname_overflow_is_yxdomain():
    zone = read_zone_text(EXAMPLE_ORG + f"d IN DNAME {'x' * 60}.{'y' * 60}.{'z' * 60}.{'w' * 50}.\n", "example.org")
    a = Authority([zone]).answer(N(f"{'a' * 60}.{'b' * 20}.d.example.org."), T.A)
    assert a.rcode == R.YXDOMAIN and [r.rdtype for r in a.answer] == [T.DNAME]


# -- NS in authority for questions without RD -------------------------------------------------------------------------
def test_positive_answers_carry_the_zones_ns_when_asked(authority):
    a = ask(authority, "www.example.com.", T.A, with_ns=True)
    assert texts(a.authority) == [("example.com.", "NS", ["ns1.example.com.", "ns2.example.net."])]
    assert texts(a.additional) == [("ns1.example.com.", "A", ["192.0.2.1"])]
    assert a.extras_optional
    assert ask(authority, "example.com.", T.NS, with_ns=True).authority == []  # already the answer
    assert [r.rdtype for r in ask(authority, "nope.example.com.", T.A, with_ns=True).authority] == [T.SOA]
    assert ask(authority, "out.example.com.", T.A, with_ns=True).authority == []  # the chain leaves the zone
    assert ask(authority, "www.example.com.", T.A).authority == []  # a stub's question (RD): minimal
