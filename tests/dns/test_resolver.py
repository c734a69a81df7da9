"""The stub resolver: against sockhop's server, against NSD (a real server started here), and against a
misbehaving responder that sends forged and broken replies first."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rrset
import pytest

from sockhop.dns import resolver
from sockhop.dns.resolver import (
    BadQuestion,
    MalformedReply,
    NoSuchName,
    Refused,
    Timeout,
    nameservers,
    parse_server,
    parse_words,
    resolve,
)
from sockhop.errors import UsageError
from tests.dns.peers import start_nsd
from tests.dns.zones import write_zone
from tests.support import end_process, require_tool


# -- parsing --------------------------------------------------------------------------------------------------------
def questions(*words: str) -> list[tuple[str, str]]:
    return parse_words(words).questions


def test_parse_words_in_digs_orders():
    """The questions dig itself asks for these words (each checked against dig 9.18 by hand, and below by
    test_cli_answers_as_dig_does for a few)."""
    assert questions("example.com") == [("example.com", "A")]
    assert parse_words(["example.com", "mx", "@127.0.0.1:5353"]).servers == ["@127.0.0.1:5353"]
    assert questions("@::1", "example.com", "TXT") == [("example.com", "TXT")]
    assert questions("a.example", "b.example", "MX") == [("a.example", "A"), ("b.example", "MX")]
    assert questions("MX", "a.example", "b.example") == [("a.example", "MX"), ("b.example", "MX")]
    assert questions("-t", "MX", "a.example", "b.example") == [("a.example", "MX"), ("b.example", "MX")]
    assert questions("a.example", "-t", "MX", "b.example") == [("a.example", "MX"), ("b.example", "A")]
    assert questions("-q", "a.example", "b.example", "-tTXT") == [("a.example", "A"), ("b.example", "TXT")]
    assert questions("-x", "192.0.2.2", "a.example") == [("2.2.0.192.in-addr.arpa.", "PTR"), ("a.example", "A")]
    assert questions("-t", "MX", "-x", "192.0.2.1") == [("1.2.0.192.in-addr.arpa.", "MX")]
    assert questions("-x", "2001:db8::1")[0][0].endswith(".8.b.d.0.1.0.0.2.ip6.arpa.")
    assert questions("a.example", "IN", "-c", "in") == [("a.example", "A")]
    assert questions("example.com", "NOPE") == [("example.com", "A"), ("NOPE", "A")]  # as dig: a second name
    assert parse_words(["-p", "5353", "@127.0.0.1", "a.example"]).port == 5353
    with pytest.raises(BadQuestion, match="give a NAME"):
        parse_words(["@127.0.0.1"])
    with pytest.raises(BadQuestion, match="not an IPv4 or IPv6 address"):
        parse_words(["-x", "example.com"])
    with pytest.raises(BadQuestion, match="unknown record type 'NOPE'"):
        parse_words(["example.com", "-t", "NOPE"])
    with pytest.raises(BadQuestion, match="only class IN"):
        parse_words(["example.com", "CH"])
    with pytest.raises(BadQuestion, match="port"):
        parse_words(["example.com", "-p", "0"])
    with pytest.raises(UsageError, match="-x needs a value"):
        parse_words(["-x"])


def test_plus_options_as_dig_spells_them():
    lookup = parse_words(["a.example", "+short", "+norec", "+dnssec", "+vc", "+time=5", "+retry=1", "+bufsize=512"])
    assert (lookup.short, lookup.recurse, lookup.dnssec, lookup.tcp) == (True, False, True, True)
    assert (lookup.timeout, lookup.tries, lookup.payload) == (5.0, 2, 512)
    assert parse_words(["a.example", "+norecurse", "+rec"]).recurse  # the last one wins
    assert parse_words(["a.example", "+tls", "+noedns"]).tls and not parse_words(["a.example", "+noed"]).edns
    shown = parse_words(["a.example", "+noall", "+answer"]).display
    assert shown.answer and not (shown.cmd or shown.comments or shown.question or shown.authority or shown.stats)
    shown = parse_words(["a.example", "+nocmd", "+noquest", "+nostats"]).display
    assert shown.comments and shown.answer and not (shown.cmd or shown.question or shown.stats)
    for bad in ("+nosuch", "+a", "+time=x", "+short=1", "-z"):
        with pytest.raises(UsageError):
            parse_words(["a.example", bad])


def test_parse_server():
    assert parse_server("@127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:5353") == ("::1", 5353)
    assert parse_server("::1") == ("::1", 53)
    with pytest.raises(BadQuestion, match="port"):
        parse_server("127.0.0.1:99999")


def test_nameservers_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\noptions ndots:1\n")
    assert nameservers(conf) == ["192.0.2.53", "fe80::1"]
    assert nameservers(tmp_path / "absent") == ["127.0.0.1"]


def test_bad_questions():
    with pytest.raises(BadQuestion):
        resolve("a..b", "A", ("127.0.0.1", 9))
    with pytest.raises(BadQuestion):
        resolve("example.com", "NOPE", ("127.0.0.1", 9))


# -- against sockhop's server ---------------------------------------------------------------------------------------
REVERSE = """\
$ORIGIN 2.0.192.in-addr.arpa.
$TTL 3600
@ IN SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 300
  IN NS ns1.example.com.
2 IN PTR www.example.com.
"""


@pytest.fixture
def sockhop_dns(sockhop_server, tmp_path):
    zones = [str(write_zone(tmp_path)), str(write_zone(tmp_path, REVERSE, "2.0.192.in-addr.arpa.zone"))]
    server = sockhop_server(["serve", "dns", *zones, "--listen", "127.0.0.1:0"], announce=2)
    return server.address("dns", "udp")


def test_resolve_the_mail_clients_way(sockhop_dns):
    (mx,) = resolve("example.com", "MX", server=sockhop_dns)
    assert (mx.preference, str(mx.exchange)) == (10, "mail.example.com.")
    assert [r.address for r in resolve("chain.example.com", "A", server=sockhop_dns)] == ["192.0.2.2"]
    assert resolve("www.example.com", "MX", server=sockhop_dns) == []  # NODATA
    with pytest.raises(NoSuchName, match="nope.example.com.: no such name"):
        resolve("nope.example.com", "MX", server=sockhop_dns)
    with pytest.raises(Refused):
        resolve("example.net", "A", server=sockhop_dns)


def test_truncated_falls_back_to_tcp(sockhop_dns):
    result = resolver.query("big.example.com", "TXT", sockhop_dns)
    assert result.transport == "tcp" and len(result.records()) == 12


def sockhop_resolve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sockhop", "resolve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def dig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("dig"), *args], capture_output=True, text=True, timeout=30)


def test_cli_sections_short_and_errors(sockhop_dns):
    at = f"@{sockhop_dns[0]}:{sockhop_dns[1]}"
    done = sockhop_resolve("example.com", "MX", at)
    assert done.returncode == 0
    sections = [
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR",
        "flags: qr aa rd",
        ";; WARNING: recursion requested but not available",
        ";; QUESTION SECTION:\n;example.com.\t\t\tIN\tMX\n",
        ";; ANSWER SECTION:\nexample.com.\t\t3600\tIN\tMX\t10 mail.example.com.\n",
        ";; ADDITIONAL SECTION:",
        f";; SERVER: 127.0.0.1#{sockhop_dns[1]}(127.0.0.1) (UDP)",
    ]
    for part in sections:
        assert part in done.stdout
    assert sockhop_resolve("example.com", "MX", at, "--short").stdout == "10 mail.example.com.\n"
    assert sockhop_resolve("--tcp", "www.example.com", at).stdout.count("(TCP)") == 1
    assert sockhop_resolve("www.example.com", at, "+tcp").stdout.count("(TCP)") == 1
    port = str(sockhop_dns[1])
    assert sockhop_resolve("-p", port, "-x", "192.0.2.2", "@127.0.0.1", "--short").stdout == "www.example.com.\n"
    asked = dig(f"@{sockhop_dns[0]}", "-p", str(sockhop_dns[1]), "example.com", "MX").stdout
    header = next(line for line in asked.splitlines() if line.startswith(";; flags:"))
    assert header.split(";", 3)[-1] in done.stdout  # the section counts read as dig's (OPT counted in ADDITIONAL)

    # NXDOMAIN and REFUSED are answers: shown in their sections, exit 0, as dig does
    done = sockhop_resolve("nope.example.com", at)
    assert (done.returncode, done.stderr) == (0, "")
    assert ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN" in done.stdout
    assert ";; AUTHORITY SECTION:\nexample.com.\t\t300\tIN\tSOA\tns1.example.com. hostmaster" in done.stdout
    assert ";; ANSWER SECTION:" not in done.stdout
    assert sockhop_resolve("nope.example.com", at, "+short").stdout == ""
    done = sockhop_resolve("example.net", at)
    assert done.returncode == 0 and "status: REFUSED" in done.stdout


def test_cli_answers_as_dig_does(sockhop_dns):
    """The same words to dig and to sockhop resolve, against the same server: the same records, in dig's columns,
    and the same +short lines, in any order (the server rotates RRsets). The +options come first: dig applies one
    written after a name to that name only, sockhop to every name."""
    where = [f"@{sockhop_dns[0]}", "-p", str(sockhop_dns[1])]
    asks = [
        ["www.example.com", "example.com", "MX"],
        ["MX", "example.com", "www.example.com"],
        ["-x", "192.0.2.2"],
        ["-t", "TXT", "example.com", "big.example.com"],  # big: truncated over UDP, asked again over TCP
        ["chain.example.com", "AAAA", "x.wild.example.com", "TXT"],
        ["+norec", "example.com", "NS", "nope.example.com"],
        ["-q", "_sip._tcp.example.com", "SRV", "+tcp"],
    ]
    for words in asks:
        for display in (["+noall", "+answer", "+authority"], ["+short"]):
            theirs, ours = dig(*where, *display, *words), sockhop_resolve(*where, *display, *words)
            assert ours.returncode == theirs.returncode == 0, ours.stderr
            assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines()), (words, display)
            assert ours.stdout.endswith("\n") == theirs.stdout.endswith("\n")
    for words in (["nope.example.com"], ["+norec", "www.example.com"], ["+dnssec", "example.com", "SOA"]):
        theirs, ours = dig(*where, *words), sockhop_resolve(*where, *words)
        for start in (";; flags:", ";; WARNING", "; EDNS:", ";; AUTHORITY SECTION:", ";; ANSWER SECTION:"):
            assert [x for x in ours.stdout.splitlines() if x.startswith(start)] == [
                x for x in theirs.stdout.splitlines() if x.startswith(start)
            ], (words, start)
        status = re.compile(r"status: \w+")
        assert status.findall(ours.stdout) == status.findall(theirs.stdout)


def test_nothing_listening_on_udp_is_said_at_once():
    """A connected UDP socket hears the ICMP port unreachable: no waiting out three tries of five seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(Timeout, match=f"connection refused: nothing answers on 127.0.0.1:{port}/udp"):
        resolve("www.example.com", "A", ("127.0.0.1", port), timeout=5, tries=3)
    done = sockhop_resolve("a.example", "b.example", f"@127.0.0.1:{port}", "--timeout", "5")
    assert time.monotonic() - started < 4
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"sockhop: connection refused: nothing answers on 127.0.0.1:{port}/udp\n" * 2
    with pytest.raises(Timeout, match=f"connection refused: nothing answers on 127.0.0.1:{port}/tcp"):
        resolve("www.example.com", "A", ("127.0.0.1", port), tcp=True)


# -- the reply must match ID, question and server ----------------------------------------------------------------------
class Responder:
    """A UDP responder on loopback that answers each query with ``behaviour(query_wire, reply_to)``."""

    def __init__(self, behaviour) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.behaviour = behaviour
        self.seen: list[tuple[bytes, tuple]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.seen.append((data, peer))
            self.behaviour(self, data, peer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def good_reply(data: bytes) -> dns.message.Message:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.77"))
    return r


def test_forged_and_broken_replies_are_ignored():
    def behaviour(responder, data, peer):
        right = good_reply(data)
        wrong_id = good_reply(data)
        wrong_id.id = (right.id + 1) % 65536
        responder.sock.sendto(wrong_id.to_wire(), peer)
        wrong_question = dns.message.make_response(dns.message.make_query("other.example.", "A"))
        wrong_question.id = right.id
        responder.sock.sendto(wrong_question.to_wire(), peer)
        responder.sock.sendto(data[:2] + b"\x81\x80garbage", peer)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:  # right reply, wrong source port
            forged = good_reply(data)
            forged.answer[0] = dns.rrset.from_text(forged.question[0].name, 60, "IN", "A", "6.6.6.6")
            elsewhere.sendto(forged.to_wire(), peer)
        time.sleep(0.05)
        responder.sock.sendto(right.to_wire(), peer)

    responder = Responder(behaviour)
    try:
        records = resolve("www.example.com", "A", responder.address, timeout=5)
        assert [r.address for r in records] == ["192.0.2.77"]
    finally:
        responder.close()


def test_silence_is_retried_then_timeout_and_ids_ports_are_random():
    responder = Responder(lambda *args: None)
    try:
        with pytest.raises(Timeout, match="timed out after 2 tries"):
            resolve("www.example.com", "A", responder.address, timeout=0.2, tries=2)
        with pytest.raises(Timeout):
            resolve("www.example.com", "A", responder.address, timeout=0.2, tries=1)
    finally:
        responder.close()
    (first, port1), (again, port1b), (second, port2) = responder.seen
    assert first == again and port1 == port1b  # a retry repeats the question
    assert (first[:2], port1) != (second[:2], port2)  # a new question: new ID and port


def test_only_garbage_is_a_malformed_reply():
    responder = Responder(lambda r, data, peer: r.sock.sendto(data[:2] + b"\x81\x80\x00\x01junk", peer))
    try:
        with pytest.raises(MalformedReply):
            resolve("www.example.com", "A", responder.address, timeout=2, tries=1)  # waits it out: could be a forgery
    finally:
        responder.close()


def test_query_flags_rd_do_and_edns_go_out_as_asked():
    responder = Responder(lambda r, data, peer: r.sock.sendto(good_reply(data).to_wire(), peer))
    try:
        resolver.query("www.example.com", "A", responder.address, recurse=False, dnssec=True, timeout=5)
        resolver.query("www.example.com", "A", responder.address, timeout=5)
        resolver.query("www.example.com", "A", responder.address, edns=False, timeout=5)
    finally:
        responder.close()
    norec, plain, no_edns = (dns.message.from_wire(data) for data, _ in responder.seen)
    assert not norec.flags & dns.flags.RD and norec.ednsflags & dns.flags.DO and norec.edns == 0
    assert plain.flags & dns.flags.RD and not plain.ednsflags & dns.flags.DO and plain.payload == 1232
    assert no_edns.edns == -1


# -- against NSD ----------------------------------------------------------------------------------------------------
@pytest.fixture
def nsd(tmp_path):
    write_zone(tmp_path)
    proc, port = start_nsd(tmp_path, "    zonefile: example.com.zone\n")
    try:
        yield ("127.0.0.1", port)
    finally:
        end_process(proc, 10)


@pytest.mark.interop
def test_against_nsd(nsd):
    (mx,) = resolve("example.com", "MX", server=nsd)
    assert str(mx.exchange) == "mail.example.com."
    assert [r.address for r in resolve("x.wild.example.com", "A", server=nsd)] == ["192.0.2.9"]
    with pytest.raises(NoSuchName):
        resolve("nope.example.com", "A", server=nsd)
    result = resolver.query("big.example.com", "TXT", nsd)
    assert len(result.records()) == 12 and result.message.flags & dns.flags.AA


def rrsets(section) -> list[tuple]:
    """A section in a comparable form: the order of RRsets and of records inside one does not matter."""
    return sorted((str(r.name), r.rdtype, r.ttl, sorted(rd.to_text() for rd in r)) for r in section)


@pytest.mark.interop
def test_sockhop_answers_as_nsd_does(nsd, sockhop_dns):
    """The same zone, the same questions: the same answer sections and rcodes as NSD. Without RD (a resolver's
    question) every section is the same; with RD (a stub's), sockhop leaves the zone's NS out of positive answers,
    as BIND's default minimal-responses no-auth-recursive does, so only negative answers' authority is compared."""
    questions = [
        ("www.example.com", "A"),
        ("chain.example.com", "AAAA"),
        ("x.wild.example.com", "TXT"),
        ("nope.example.com", "A"),
        ("b.c.example.com", "A"),
        ("example.com", "MX"),
        ("foo.cwild.example.com", "A"),
        ("www.example.com", "MX"),
        ("dangling.example.com", "A"),
        ("sub.wild.example.com", "TXT"),
        ("x.old.example.com", "A"),
        ("y.old.example.com", "A"),
        ("old.example.com", "DNAME"),
        ("a.out2.example.com", "A"),
        ("example.com", "NS"),
        ("sub.example.com", "A"),
    ]
    for name, rdtype in questions:
        norec = dns.message.make_query(name, rdtype)
        norec.flags &= ~dns.flags.RD
        theirs = dns.query.tcp(norec, nsd[0], port=nsd[1], timeout=5)
        ours = dns.query.tcp(norec, sockhop_dns[0], port=sockhop_dns[1], timeout=5)
        assert ours.rcode() == theirs.rcode(), name
        for section in ("answer", "authority", "additional"):
            assert rrsets(getattr(ours, section)) == rrsets(getattr(theirs, section)), (name, section)
    for name, rdtype in questions:
        theirs = dns.query.tcp(dns.message.make_query(name, rdtype), nsd[0], port=nsd[1], timeout=5)
        ours = dns.query.tcp(dns.message.make_query(name, rdtype), sockhop_dns[0], port=sockhop_dns[1], timeout=5)
        assert ours.rcode() == theirs.rcode(), name
        assert rrsets(ours.answer) == rrsets(theirs.answer), name
        assert bool(ours.flags & dns.flags.AA) == bool(theirs.flags & dns.flags.AA), name
        if not theirs.answer:
            assert [r.rdtype for r in ours.authority] == [r.rdtype for r in theirs.authority], name
