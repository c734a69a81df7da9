"""The answering core over wire format, and the UDP and TCP protocols around it. Fed bytes directly: the TCP
stream whole, byte by byte and with trailing data, as h11's tests do."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype as T
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockhop.dns.protocol import DnsDatagram, DnsStream
from sockhop.dns.server import NameServer
from sockhop.dns.zone import read_zone_text
from tests.dns.zones import BIG_TXT, EXAMPLE

R = dns.rcode.Rcode
PEER = ("127.0.0.1", 40000)


@pytest.fixture
def server() -> NameServer:
    return NameServer([read_zone_text(EXAMPLE + BIG_TXT, "example.com")], allow_transfer=["127.0.0.0/8"])


def query(name, rdtype=T.A, *, qid=1234, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    return q


def udp(server, q: dns.message.Message | bytes) -> dns.message.Message | None:
    wire = q if isinstance(q, bytes) else q.to_wire()
    replies = DnsDatagram(server).datagram_received(wire, PEER)
    assert len(replies) <= 1
    return dns.message.from_wire(replies[0]) if replies else None


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def unframe(data: bytes, **kw) -> list[dns.message.Message]:
    out = []
    while data:
        (size,) = struct.unpack_from("!H", data)
        out.append(dns.message.from_wire(data[2 : 2 + size], **kw))
        data = data[2 + size :]
    return out


def stream_feed(server, chunks, peer=PEER) -> tuple[bytes, bool]:
    proto = DnsStream(server)
    proto.connection_made(peer, ("127.0.0.1", 53))
    out, closed = b"", False
    for chunk in chunks:
        reply = proto.data_received(chunk)
        out += b"".join(reply.send)
        while reply.then is not None:  # work the engine runs off the event loop (a transfer's first encoding)
            reply = reply.then()
            out += b"".join(reply.send)
        closed = closed or reply.close
    return out, closed


# -- the core -------------------------------------------------------------------------------------------------------
def test_answer_echoes_id_question_and_rd(server):
    q = query("www.example.com", qid=4321)
    r = udp(server, q)
    assert q.is_response(r)
    assert r.id == 4321 and r.flags & dns.flags.AA and r.flags & dns.flags.RD
    assert r.answer[0][0].address == "192.0.2.2"


def test_cache_answers_repeats_with_only_the_id_patched(server):
    first = DnsDatagram(server).datagram_received(query("www.example.com", qid=1).to_wire(), PEER)[0]
    second = DnsDatagram(server).datagram_received(query("www.example.com", qid=2).to_wire(), PEER)[0]
    assert first[:2] == b"\x00\x01" and second[:2] == b"\x00\x02" and first[2:] == second[2:]
    assert len(server.snapshot.udp_cache) == 1


def test_cache_is_bounded_in_bytes():
    from sockhop.dns.server import ReplyCache

    cache = ReplyCache(limit=1000)
    for i in range(100):
        cache.put(b"k%03d" % i, b"x" * 96, "", b"")
    assert cache.size <= 1000 and len(cache) == 10
    assert b"k099" in cache.entries and b"k000" not in cache.entries  # the oldest went first
    cache.put(b"huge", b"x" * 5000, "", b"")
    assert b"huge" not in cache.entries


def test_reload_replaces_data_and_cache(server):
    udp(server, query("www.example.com"))
    server.loader = lambda: [read_zone_text(EXAMPLE.replace("192.0.2.2", "192.0.2.99"), "example.com")]
    assert server.reload().ok
    assert len(server.snapshot.udp_cache) == 0
    assert udp(server, query("www.example.com")).answer[0][0].address == "192.0.2.99"


def test_broken_reload_keeps_the_old_data(server):
    from sockhop.dns.zone import ZoneError

    def broken():
        raise ZoneError("example.com.zone:3: expecting an integer")

    server.loader = broken
    outcome = server.reload()
    assert not outcome.ok and "example.com.zone:3" in outcome.message
    assert udp(server, query("www.example.com")).answer


def test_nxdomain_and_refused_on_the_wire(server):
    r = udp(server, query("nope.example.com"))
    assert r.rcode() == R.NXDOMAIN and r.authority[0].rdtype == T.SOA and r.flags & dns.flags.AA
    r = udp(server, query("example.net"))
    assert r.rcode() == R.REFUSED and not r.flags & dns.flags.AA


def test_no_edns_over_512_is_truncated(server):
    r = udp(server, query("big.example.com", T.TXT))
    assert r.flags & dns.flags.TC and r.answer == []


def test_edns_payload_is_honoured_up_to_the_cap(server):
    small = udp(server, query("big.example.com", T.TXT, use_edns=0, payload=1000))
    assert small.flags & dns.flags.TC and small.edns == 0
    mx = udp(server, query("example.com", T.MX, use_edns=0, payload=4096))
    assert not mx.flags & dns.flags.TC and mx.edns == 0 and mx.payload == 1232
    # the full TXT set (~1.3 kB) is over the 1232-byte cap however big the client's buffer
    assert udp(server, query("big.example.com", T.TXT, use_edns=0, payload=4096)).flags & dns.flags.TC


def test_tcp_is_never_truncated(server):
    out, closed = stream_feed(server, [framed(query("big.example.com", T.TXT).to_wire())])
    (r,) = unframe(out)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 12 and not closed


def test_badvers(server):
    r = udp(server, query("www.example.com", use_edns=1))
    assert r.rcode() == R.BADVERS


def test_notimp_for_other_opcodes(server):
    q = query("example.com", T.SOA)
    q.set_opcode(dns.opcode.STATUS)
    r = udp(server, q)
    assert r.rcode() == R.NOTIMP and r.opcode() == dns.opcode.STATUS


def test_notify_for_a_zone_it_is_primary_for_is_refused(server):
    q = query("example.com", T.SOA)
    q.set_opcode(dns.opcode.NOTIFY)
    r = udp(server, q)
    assert r.rcode() == R.REFUSED and r.opcode() == dns.opcode.NOTIFY
    q = query("example.net", T.SOA)
    q.set_opcode(dns.opcode.NOTIFY)
    assert udp(server, q).rcode() == R.NOTAUTH


def test_formerr_for_a_readable_header_over_garbage(server):
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
    r = udp(server, garbage)
    assert r.id == 0x1234 and r.rcode() == R.FORMERR and r.flags & dns.flags.QR


def test_formerr_for_two_questions(server):
    q = query("www.example.com")
    q.question.append(q.question[0])
    assert udp(server, q).rcode() == R.FORMERR


def test_not_in_class_refused(server):
    assert udp(server, query("www.example.com", rdclass="CH")).rcode() == R.REFUSED


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x12" * 11])
def test_short_packets_are_dropped(server, data):
    assert udp(server, data) is None


def test_responses_are_dropped(server):
    r = dns.message.make_response(query("www.example.com"))
    assert udp(server, r.to_wire()) is None


def test_axfr_over_udp_is_not_implemented(server):
    assert udp(server, query("example.com", T.AXFR)).rcode() == R.NOTIMP


def test_query_log_sees_every_answer(server):
    seen = []
    server.query_log = lambda peer, transport, summary: seen.append((transport, summary))
    udp(server, query("www.example.com"))
    udp(server, query("www.example.com"))  # from the cache: logged all the same
    assert seen == [("udp", "www.example.com. IN A NOERROR")] * 2


# -- TCP framing ----------------------------------------------------------------------------------------------------
def three_queries() -> bytes:
    return framed(*(query(n, qid=i).to_wire() for i, n in enumerate(("www.example.com", "mail.example.com", "x.org"))))


def test_stream_several_queries_whole(server):
    out, closed = stream_feed(server, [three_queries()])
    replies = unframe(out)
    assert [r.id for r in replies] == [0, 1, 2]
    assert [r.rcode() for r in replies] == [R.NOERROR, R.NOERROR, R.REFUSED]
    assert not closed


def test_stream_byte_by_byte(server):
    data = three_queries()
    out, _ = stream_feed(server, [data[i : i + 1] for i in range(len(data))])
    assert [r.id for r in unframe(out)] == [0, 1, 2]


def test_stream_with_trailing_partial_message(server):
    data = three_queries()
    out, closed = stream_feed(server, [data + b"\x00\x20\x12"])
    assert len(unframe(out)) == 3 and not closed


def test_stream_closes_on_a_message_without_a_header(server):
    out, closed = stream_feed(server, [framed(b"\x00\x01\x02")])
    assert out == b"" and closed


def test_stream_closes_at_once_on_stop_only_between_queries(server):
    idle = DnsStream(server)
    assert idle.stop_requested().close
    busy = DnsStream(server)
    busy.data_received(framed(query("www.example.com").to_wire())[:5])
    assert not busy.stop_requested().close


# -- AXFR -----------------------------------------------------------------------------------------------------------
def test_axfr_allowed(server):
    out, _ = stream_feed(server, [framed(query("example.com", T.AXFR).to_wire())])
    replies = unframe(out, one_rr_per_rrset=True)  # else the closing SOA merges into the opening one
    rrsets = [rrset for r in replies for rrset in r.answer]
    assert rrsets[0].rdtype == rrsets[-1].rdtype == T.SOA
    assert all(r.flags & dns.flags.AA and r.rcode() == R.NOERROR for r in replies)
    assert sum(len(r) for r in rrsets) == server.snapshot.authority.zones[rrsets[0].name].record_count() + 1


def test_a_versions_first_axfr_is_encoded_off_the_event_loop_and_in_order(server):
    """The first transfer of a zone's version is the work the engine runs off the event loop (the loop answers
    others meanwhile); the answer to a question before it goes at once, one after it waits its turn; the next
    transfer is stamped from the kept messages, at once."""
    proto = DnsStream(server)
    proto.connection_made(PEER, ("127.0.0.1", 53))
    before, axfr, after = (query("www.example.com").to_wire(), query("example.com", T.AXFR).to_wire(),
                           query("mail.example.com").to_wire())  # fmt: skip
    reply = proto.data_received(framed(before, axfr, after))
    assert [r.question[0].name.to_text() for r in unframe(b"".join(reply.send))] == ["www.example.com."]
    assert reply.then is not None
    later = reply.then()
    answers = unframe(b"".join(later.send), one_rr_per_rrset=True)
    assert answers[0].answer[0].rdtype == T.SOA and answers[-1].question[0].name.to_text() == "mail.example.com."
    assert later.then is None
    again = proto.data_received(framed(axfr))
    assert again.then is None and unframe(b"".join(again.send), one_rr_per_rrset=True)[0].answer[0].rdtype == T.SOA


def test_axfr_refused_to_others(server):
    out, _ = stream_feed(server, [framed(query("example.com", T.AXFR).to_wire())], peer=("192.0.2.7", 5000))
    (r,) = unframe(out)
    assert r.rcode() == R.REFUSED and r.answer == []


def test_axfr_of_a_zone_not_served(server):
    out, _ = stream_feed(server, [framed(query("example.net", T.AXFR).to_wire())])
    assert unframe(out)[0].rcode() == R.NOTAUTH


# -- nothing a client sends makes it raise --------------------------------------------------------------------------
SEEDS = [
    query("www.example.com").to_wire(),
    query("big.example.com", T.TXT, use_edns=0, payload=700).to_wire(),
    query("x.wild.example.com", T.ANY).to_wire(),
    query("example.com", T.AXFR).to_wire(),
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.binary(max_size=600))
def test_random_datagrams_never_raise(server, data):
    replies = DnsDatagram(server).datagram_received(data, PEER)
    assert len(replies) <= 1 and all(len(r) <= 65535 for r in replies)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=6), st.data())
def test_mutated_queries_never_raise(server, seed, flips, data):
    packet = bytearray(seed)
    for where, value in flips:
        packet[where % len(packet)] = value
    cut = data.draw(st.integers(0, len(packet)))
    packet = bytes(packet[:cut] if data.draw(st.booleans()) else packet)
    replies = DnsDatagram(server).datagram_received(packet, PEER)
    for reply in replies:
        assert reply[:2] == packet[:2]  # any reply answers that query's ID
        assert len(reply) <= max(512, 1232)
    out, _ = stream_feed(server, [framed(packet)])


def test_extras_are_dropped_before_truncating(server):
    q = query("www.example.com", T.A)
    q.flags &= ~dns.flags.RD
    full = udp(server, q)
    assert full.authority and full.additional and not full.flags & dns.flags.TC
    many = read_zone_text(EXAMPLE + "".join(f"@ IN NS ns{i}.far-away-{i}.example.net.\n" for i in range(40)), "x")
    big = NameServer([many])
    q = query("www.example.com", T.A, use_edns=False)
    q.flags &= ~dns.flags.RD
    reply = udp(big, q)
    assert not reply.flags & dns.flags.TC and reply.answer and reply.authority == [] and reply.additional == []
