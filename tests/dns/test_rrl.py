"""Response rate limiting and DNS cookies: sans-IO against the protocol (the clock handed in by tick), then a real
flood from one loopback address while another address asks too, and dig's cookies."""

from __future__ import annotations

import socket
import subprocess
import time

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype as T
from hypothesis import given, settings
from hypothesis import strategies as st

from sockhop.dns.protocol import DnsDatagram
from sockhop.dns.rrl import ALLOW, DROP, RateLimiter
from sockhop.dns.server import NameServer
from sockhop.dns.zone import read_zone_text
from tests.dns.zones import BIG_TXT, EXAMPLE, write_zone
from tests.support import require_tool

AMPLIFIER = "".join(f'amp IN TXT "{i:02d}{"x" * 98}"\n' for i in range(8))  # ~900 bytes: fits in one datagram

FLOODER = ("127.0.0.1", 40000)
NEIGHBOUR = ("127.0.0.77", 40000)  # the same /24: limited with the flooder
OTHER = ("127.0.1.5", 40000)


def make_server(rate=5, slip=2, exempt=()) -> NameServer:
    zone = read_zone_text(EXAMPLE + BIG_TXT + AMPLIFIER, "example.com")
    server = NameServer([zone], rrl=RateLimiter(rate, slip, exempt))
    server.tick(1000.0)
    return server


def ask(proto, name="www.example.com", rdtype=T.A, peer=FLOODER, **kw) -> list[bytes]:
    return proto.datagram_received(dns.message.make_query(name, rdtype, **kw).to_wire(), peer)


def test_limiter_counts_per_prefix_and_class_in_one_second_windows():
    rrl = RateLimiter(3, 0)
    rrl.tick(10.2)
    assert [rrl.check("192.0.2.1", b"a") for _ in range(4)] == [ALLOW, ALLOW, ALLOW, DROP]
    assert rrl.check("192.0.2.200", b"a") == DROP  # the same /24
    assert rrl.check("192.0.3.1", b"a") == ALLOW
    assert rrl.check("192.0.2.1", b"b") == ALLOW  # another answer class
    rrl.tick(10.9)
    assert rrl.check("192.0.2.1", b"a") == DROP  # still the same second
    rrl.tick(11.0)
    assert rrl.check("192.0.2.1", b"a") == ALLOW
    v6 = RateLimiter(1, 0)
    assert v6.check("2001:db8:0:ff00::1", b"a") == ALLOW
    assert v6.check("2001:db8:0:ffaa::2", b"a") == DROP  # the same /56
    assert v6.check("2001:db8:0:fe00::1", b"a") == ALLOW


def test_slip_answers_every_nth_limited_query_truncated():
    proto = DnsDatagram(make_server(rate=5, slip=2))
    results = []
    proto.on_result = lambda proto_, rcode: results.append(rcode)
    replies = [ask(proto, "amp.example.com", T.TXT, use_edns=0, payload=1232) for _ in range(15)]
    assert all(len(r) == 1 and len(r[0]) > 800 for r in replies[:5])
    rest = replies[5:]
    slipped = [r[0] for r in rest if r]
    assert len(slipped) == 5 and sum(not r for r in rest) == 5
    for wire in slipped:
        message = dns.message.from_wire(wire)
        assert message.flags & dns.flags.TC and not message.answer
        assert str(message.question[0].name) == "amp.example.com."
    assert results.count("slipped") == 5 and results.count("limited") == 5 and results.count("NOERROR") == 5


def test_other_clients_other_classes_and_tcp_are_not_limited():
    server = make_server(rate=2, slip=0)
    proto = DnsDatagram(server)
    for _ in range(10):
        ask(proto)
    assert ask(proto, peer=NEIGHBOUR) == []
    assert len(ask(proto, peer=OTHER)) == 1
    assert len(ask(proto, "mail.example.com")) == 1
    for _ in range(5):  # every NXDOMAIN of a zone is one class
        ask(proto, "nothere.example.com")
    assert ask(proto, "another.example.com") == []
    q = dns.message.make_query("www.example.com", "A").to_wire()
    assert server.respond(q, FLOODER, tcp=True) is not None
    server.tick(1001.0)
    assert len(ask(proto)) == 1


def test_exempt_networks_are_never_limited():
    proto = DnsDatagram(make_server(rate=1, slip=0, exempt=["127.0.0.0/8"]))
    assert all(len(ask(proto)) == 1 for _ in range(20))
    assert all(len(ask(proto, peer=("::ffff:127.0.0.1", 1, 0, 0))) == 1 for _ in range(5))


def cookie_query(client: bytes, server_cookie: bytes = b"") -> dns.message.Message:
    return dns.message.make_query(
        "www.example.com", "A", use_edns=0, options=[dns.edns.CookieOption(client, server_cookie)]
    )


def server_cookie(wire: bytes) -> bytes:
    message = dns.message.from_wire(wire)
    (option,) = [o for o in message.options if o.otype == dns.edns.OptionType.COOKIE]
    return option.server


def test_a_client_returning_our_cookie_is_never_limited():
    proto = DnsDatagram(make_server(rate=2, slip=0))
    client = b"\x01" * 8
    first = proto.datagram_received(cookie_query(client).to_wire(), FLOODER)
    cookie = server_cookie(first[0])
    assert len(cookie) == 16
    for _ in range(10):  # the flood from the same address, without cookies
        ask(proto)
    assert ask(proto) == []
    for _ in range(20):
        replies = proto.datagram_received(cookie_query(client, cookie).to_wire(), FLOODER)
        assert len(replies) == 1 and len(server_cookie(replies[0])) == 16
    # a cookie made for another address, or another client cookie, proves nothing
    assert proto.datagram_received(cookie_query(client, cookie).to_wire(), ("127.0.0.2", 5)) == []
    assert proto.datagram_received(cookie_query(b"\x02" * 8, cookie).to_wire(), FLOODER) == []


def test_cookies_expire_after_an_hour():
    server = make_server(rate=1, slip=0)
    proto = DnsDatagram(server)
    client = b"\x03" * 8
    cookie = server_cookie(proto.datagram_received(cookie_query(client).to_wire(), FLOODER)[0])
    ask(proto)
    server.tick(1000.0 + 3599)
    ask(proto)
    assert len(proto.datagram_received(cookie_query(client, cookie).to_wire(), FLOODER)) == 1
    server.tick(1000.0 + 3700)
    ask(proto)
    assert proto.datagram_received(cookie_query(client, cookie).to_wire(), FLOODER) == []


@settings(max_examples=150, deadline=None)
@given(
    client=st.binary(min_size=8, max_size=8),
    tail=st.binary(min_size=0, max_size=40),
    dnssec=st.booleans(),
)
def test_any_cookie_is_answered_or_formerr_never_an_exception(client, tail, dnssec):
    """Hypothesis on the cookie and DO paths: any server cookie (valid length or not) gets an answer, a fresh
    cookie when it is well formed, and DO echoed."""
    server = make_server(rate=1000)
    flags = dns.flags.DO if dnssec else 0
    q = dns.message.make_query("www.example.com", "A", use_edns=0, ednsflags=flags)
    wire = bytearray(q.to_wire())
    option = (10).to_bytes(2, "big") + (8 + len(tail)).to_bytes(2, "big") + client + tail
    wire[-2:] = len(option).to_bytes(2, "big")  # the OPT's rdlength (it had none)
    wire += option
    replies = DnsDatagram(server).datagram_received(bytes(wire), FLOODER)
    assert len(replies) == 1
    reply = dns.message.from_wire(replies[0])
    if len(tail) == 0 or 8 <= len(tail) <= 32:
        assert reply.rcode() == 0 and reply.answer
        assert bool(reply.ednsflags & dns.flags.DO) == dnssec
        assert len(server_cookie(replies[0])) == 16
    else:
        assert reply.rcode() == dns.rcode.FORMERR


# -- a real flood ----------------------------------------------------------------------------------------------------
def flood(port: int, source: str, count: int, seconds: float) -> tuple[int, int, int, int]:
    """Send ``count`` queries for the big TXT from ``source`` within about ``seconds``; (bytes in, bytes out,
    answers, truncated answers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    query = dns.message.make_query("amp.example.com", "TXT", use_edns=0, payload=1232).to_wire()
    sent = received = answers = truncated = 0
    start = time.monotonic()
    for i in range(count):
        sock.sendto(query, ("127.0.0.1", port))
        sent += len(query)
        if i % 50 == 49:
            time.sleep(max(0.0, start + seconds * i / count - time.monotonic()))
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            received += len(data)
            answers += 1
            truncated += bool(data[2] & 0x02)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        received += len(data)
        answers += 1
        truncated += bool(data[2] & 0x02)
    sock.close()
    return sent, received, answers, truncated


def test_flood_from_one_address_gets_no_more_bytes_than_it_sends(sockhop_server, tmp_path):
    zone = write_zone(tmp_path, EXAMPLE + AMPLIFIER)
    server = sockhop_server(
        ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", "eventloop", "--rrl-rate", "20"],
        announce=2,
    )
    port = server.address("dns", "udp")[1]
    sent, received, answers, truncated = flood(port, "127.0.0.9", 4000, 2.0)
    assert answers > 0 and truncated > 0
    assert received <= sent, (sent, received, answers, truncated)
    # another address, another prefix, meanwhile: every answer
    sent2, received2, answers2, truncated2 = flood(port, "127.0.5.1", 20, 1.0)
    assert answers2 == 20 and truncated2 == 0
    # from the flooding address itself: a client that returns our cookie gets every answer, one that does not is
    # limited (60 questions at once, against a rate of 20 a second)
    client = b"\x05" * 8
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.9", 0))
    sock.settimeout(5)
    sock.sendto(cookie_query(client).to_wire(), ("127.0.0.1", port))
    cookie = server_cookie(sock.recv(65535))

    def burst(query: bytes) -> list[bytes]:
        for _ in range(60):
            sock.sendto(query, ("127.0.0.1", port))
        got = []
        sock.settimeout(1.0)
        try:
            while len(got) < 60:
                got.append(sock.recv(65535))
        except TimeoutError:
            pass
        return got

    with_cookie = burst(cookie_query(client, cookie).to_wire())
    assert len(with_cookie) == 60 and not any(reply[2] & 0x02 for reply in with_cookie)
    without = burst(dns.message.make_query("www.example.com", "A").to_wire())
    assert len(without) < 60 or any(reply[2] & 0x02 for reply in without)
    sock.close()
    dig = require_tool("dig")
    out = subprocess.run(
        [dig, "@127.0.0.1", "-p", str(port), "-b", "127.0.9.9", "+cookie", "+time=2", "+tries=1", "www.example.com"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "COOKIE:" in out and "status: NOERROR" in out and "192.0.2.2" in out


def test_cookie_clients_are_answered_from_the_reply_cache_each_with_its_own_cookie():
    server = make_server(rate=1000)
    proto = DnsDatagram(server)
    replies = [proto.datagram_received(cookie_query(bytes([i]) * 8).to_wire(), FLOODER)[0] for i in range(1, 4)]
    assert len(server.snapshot.udp_cache) == 1  # the question without its cookie, cached once
    cookies = [server_cookie(reply) for reply in replies]
    assert len(set(cookies)) == 3
    for i, reply in enumerate(replies, 1):
        message = dns.message.from_wire(reply)
        (option,) = message.options
        assert option.client == bytes([i]) * 8 and message.answer[0][0].address == "192.0.2.2"
    # a reply near the client's size limit goes out without the cookie rather than over the limit
    q = dns.message.make_query("amp.example.com", "TXT", use_edns=0, payload=512,
                               options=[dns.edns.CookieOption(b"\x07" * 8, b"")])  # fmt: skip
    (reply,) = proto.datagram_received(q.to_wire(), FLOODER)
    assert len(reply) <= 512
