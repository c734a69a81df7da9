"""Updates read and answered on the wire (sockhop.dns.updatewire, tsig.WireKey): the same RRsets dns.message reads,
signatures dnspython makes checked by ours and ours checked by dnspython, for every HMAC algorithm; a bad MAC, an
unknown key, another algorithm and a stale time answered NOTAUTH as before; and what the reader leaves alone (EDNS,
garbage) still answered by dns.message."""

from __future__ import annotations

import base64
import time
from unittest import mock

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rrset
import dns.tsig
import dns.update
import pytest

from sockhop.dns.journal import Journal
from sockhop.dns.server import NameServer
from sockhop.dns.tsig import ALGORITHMS, Acl, WireKey, make_key, wire_keys
from sockhop.dns.updatewire import WireUpdate, read
from sockhop.dns.zone import read_zone_text
from tests.dns.zones import EXAMPLE

SECRET = base64.b64encode(bytes(range(40, 72))).decode()
Rcode = dns.rcode.Rcode
PEER = ("127.0.0.1", 5000)


def key(algorithm: str = "hmac-sha256", name: str = "upd", secret: str = SECRET) -> dns.tsig.Key:
    return make_key(name, algorithm, secret, "test")


@pytest.fixture
def server(tmp_path):
    zone = read_zone_text(EXAMPLE, "example.com.zone")
    ring = {k.name: k for k in (key(), key("hmac-md5", "old"))}
    journal = Journal(tmp_path / "example.com.zone.jnl", zone.origin)
    allow = Acl(keys={dns.name.from_text("upd"), dns.name.from_text("old")})
    yield NameServer([zone], keyring=ring, allow_update=allow, journals={zone.origin: journal})
    journal.close()


def sections(message) -> list:
    """What apply reads of an update, comparable: each RRset's identity, TTL and records, in order."""
    return [
        [(r.name, r.rdclass, r.rdtype, r.covers, r.deleting, r.ttl, sorted(rd.to_text() for rd in r)) for r in rrsets]
        for rrsets in (message.prerequisite, message.update)
    ]


def test_the_reader_reads_the_records_as_dns_message_does():
    message = dns.update.UpdateMessage("example.com.")
    message.present("www")
    message.present("www", "A")
    message.present("mail", "A", "192.0.2.3")
    message.present("mail", "A", "192.0.2.4")  # an RRset of its own, as every record of an update
    message.absent("nothere")
    message.absent("www", "MX")
    message.add("new", 300, "A", "192.0.2.77")
    message.add("other", 60, "TXT", '"x"')
    message.add("new", 200, "A", "192.0.2.78")
    message.delete("gone")
    message.delete("www", "AAAA")
    message.delete("mail", "A", "192.0.2.3")
    message.add("new", 300, "AAAA", "2001:db8::77")
    wire = message.to_wire()  # names compressed against the zone's
    ours = read(wire, {}, 0)
    assert isinstance(ours, WireUpdate) and ours.key is None
    assert ours.zone == dns.name.from_text("example.com.")
    assert sections(ours) == sections(dns.message.from_wire(wire))
    assert len(ours.prerequisite) == 6 and len(ours.update) == 7


def test_what_the_reader_leaves_to_dns_message():
    message = dns.update.UpdateMessage("example.com.")
    message.add("new", 300, "A", "192.0.2.77")
    wire = message.to_wire()
    with_edns = dns.update.UpdateMessage("example.com.")
    with_edns.use_edns(0)
    with_edns.add("new", 300, "A", "192.0.2.77")
    assert read(wire, {}, 0) is not None
    for other in (with_edns.to_wire(), wire[:-3], wire + b"trailing", wire[:12] + b"\xff" * 20, wire[:5] + b"\x02"):
        assert read(other, {}, 0) is None


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_signatures_both_ways_for_every_algorithm(algorithm):
    signing = key(algorithm)
    message = dns.update.UpdateMessage("example.com.", keyring=signing)
    message.add("new", 300, "A", "192.0.2.77")
    wire = message.to_wire()  # signed by dnspython
    request = read(wire, wire_keys({signing.name: signing}), int(time.time()))
    assert request is not None and request.key == signing.name  # checked by ours
    for rcode in (Rcode.NOERROR, Rcode.NXRRSET, Rcode.REFUSED):
        reply = dns.message.from_wire(request.reply(rcode), keyring=signing, request_mac=message.mac)  # by dnspython
        assert reply.rcode() == rcode and reply.id == message.id and reply.had_tsig
        assert reply.question[0].name == dns.name.from_text("example.com.")
        assert (reply.tsig_error, reply.tsig[0].fudge, reply.tsig[0].original_id) == (0, 300, message.id)


def test_an_unsigned_answer_is_what_dns_message_writes():
    message = dns.update.UpdateMessage("Example.COM.")
    message.id = 4660
    message.flags |= 0x0100  # RD, kept as make_response keeps it
    message.add("new", 300, "A", "192.0.2.77")
    wire = message.to_wire()
    request = read(wire, {}, 0)
    for rcode in (Rcode.NOERROR, Rcode.FORMERR, Rcode.NOTAUTH, Rcode.NOTZONE):
        expected = dns.message.make_response(dns.message.from_wire(wire))
        expected.set_rcode(rcode)
        assert request.reply(rcode) == expected.to_wire()


def signed(signing: dns.tsig.Key, address: str = "192.0.2.77", **tsig) -> tuple[dns.update.UpdateMessage, bytes]:
    message = dns.update.UpdateMessage("example.com.")
    message.add("new", 300, "A", address)
    message.use_tsig(signing, **tsig)
    return message, message.to_wire()


def test_a_good_signature_is_applied_and_answered_signed(server):
    message, wire = signed(key())
    reply, summary = server.update(wire, PEER)()
    answer = dns.message.from_wire(reply, keyring=key(), request_mac=message.mac)
    assert answer.rcode() == Rcode.NOERROR and summary.endswith("NOERROR serial 2024010101 -> 2024010102")
    message, wire = signed(key("hmac-md5", "old"), "192.0.2.78")  # another key, another algorithm
    reply, _ = server.update(wire, PEER)()
    assert dns.message.from_wire(reply, keyring=key("hmac-md5", "old"), request_mac=message.mac).rcode() == 0


def notauth(server, wire: bytes) -> tuple[dns.message.Message, str]:
    reply, summary = server.update(wire, PEER)
    assert isinstance(reply, bytes)  # refused at once: nothing to apply
    answer = dns.message.from_wire(reply, keyring=False)
    assert answer.rcode() == Rcode.NOTAUTH
    return answer, summary


def test_a_bad_mac_an_unknown_key_another_algorithm_and_a_stale_time(server):
    _, wire = signed(key())
    at = wire.rindex(b"\x00\x20") + 2  # the MAC's 32 bytes follow their size
    forged = wire[:at] + bytes([wire[at] ^ 1]) + wire[at + 1 :]
    assert read(forged, server.wire_keys, int(time.time())) is None
    answer, summary = notauth(server, forged)
    assert answer.tsig_error == Rcode.BADSIG and summary == "UPDATE TSIG BADSIG key upd. NOTAUTH"
    answer, summary = notauth(server, signed(key(name="stranger"))[1])
    assert answer.tsig_error == Rcode.BADKEY and not answer.mac  # unsigned: we do not hold that key
    answer, _ = notauth(server, signed(key("hmac-sha512"))[1])  # our "upd" is hmac-sha256
    assert answer.tsig_error == Rcode.BADKEY
    with mock.patch("time.time", return_value=time.time() - 3600):  # signed an hour ago: outside the fudge
        _, stale = signed(key())
    assert read(stale, server.wire_keys, int(time.time())) is None
    answer, summary = notauth(server, stale)
    assert answer.tsig_error == Rcode.BADTIME and answer.mac  # signed, with our time in it
    assert server.snapshot.authority.zones[dns.name.from_text("example.com.")].serial == 2024010101


def test_an_update_dns_message_reads_is_still_answered(server):
    message = dns.update.UpdateMessage("example.com.", keyring=key())
    message.use_edns(0)
    message.add("new", 300, "A", "192.0.2.77")
    wire = message.to_wire()
    assert read(wire, server.wire_keys, int(time.time())) is None  # EDNS: dns.message's
    reply, _ = server.update(wire, PEER)()
    answer = dns.message.from_wire(reply, keyring=key(), request_mac=message.mac)
    assert answer.rcode() == Rcode.NOERROR and answer.edns == 0
    reply, summary = server.update(wire[:12] + b"\xff" * 20, PEER)
    assert reply[3] & 0x0F == Rcode.FORMERR and summary == "UPDATE malformed FORMERR"


def test_wire_keys_are_those_hmac_signs():
    ring = {k.name: k for k in (key(), key("hmac-sha384", "b"))}
    keys = wire_keys(ring)
    assert set(keys) == set(ring) and isinstance(keys[dns.name.from_text("b")], WireKey)
    gss = dns.tsig.Key("gss", SECRET, dns.tsig.GSS_TSIG)
    assert not wire_keys({gss.name: gss})  # what hmac cannot check is left to dnspython
