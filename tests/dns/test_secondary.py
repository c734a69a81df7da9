"""sockhop as a secondary (``--secondary ZONE@PRIMARY``): of sockhop with TSIG (AXFR, then IXFR after nsupdate,
woken by NOTIFY), kept in --data so a restart answers at once, serving until the SOA's expire time after its primary
disappears and SERVFAIL then, and a transfer cut off or garbled (a fake primary here) leaving the zone unchanged."""

from __future__ import annotations

import socket
import struct
import threading
import time

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import dns.zone
import pytest

from tests.dns.peers import free_port
from tests.dns.test_dynamic import SECRET, SERIAL, nsupdate
from tests.dns.zones import EXAMPLE, write_zone

pytestmark = pytest.mark.interop

TSIG = ["--tsig", f"upd:{SECRET}"]


def primary(sockhop_server, zone, *extra):
    args = ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", *TSIG, "--allow-update", "key:upd"]
    server = sockhop_server([*args, "--allow-transfer", "key:upd", *extra], announce=2)
    return server, server.address("dns", "udp")[1]


def secondary(sockhop_server, spec, port, *extra, model="eventloop"):
    args = ["serve", "dns", "--secondary", spec, "--listen", f"127.0.0.1:{port}", "--model", model, *TSIG, "-v"]
    announce = 1 if "--tcp-only" in extra else 2
    return sockhop_server([*args, *extra], announce=announce)


def answer(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=3)


def serial_of(port: int, tcp: bool = False) -> int | None:
    try:
        reply = answer(port, "example.com", "SOA", tcp)
    except (dns.exception.Timeout, OSError):
        return None
    return reply.answer[0][0].serial if reply.rcode() == dns.rcode.NOERROR and reply.answer else None


def wait_until(check, what: str, server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: {server.log()}"
        time.sleep(0.1)


def test_secondary_of_sockhop_with_tsig_notify_and_ixfr(sockhop_server, tmp_path):
    """Refresh an hour away: only the primary's NOTIFY can bring the update within seconds, and by IXFR."""
    zone = write_zone(tmp_path, EXAMPLE)
    port = free_port()
    data = tmp_path / "data"
    prim, pport = primary(sockhop_server, zone, "--notify", f"127.0.0.1:{port},key=upd", "--query-log",
                          str(tmp_path / "q.log"))  # fmt: skip
    sec = secondary(sockhop_server, f"example.com@127.0.0.1:{pport},key=upd", port, "--data", str(data))
    wait_until(lambda: serial_of(port) == SERIAL, "the first transfer", sec)
    assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.2"
    assert "IN AXFR NOERROR 29 records" in (tmp_path / "q.log").read_text()
    assert nsupdate(pport, "update add moved.example.com 300 A 192.0.2.71").returncode == 0
    wait_until(lambda: serial_of(port) == SERIAL + 1, "NOTIFY, then IXFR", sec, timeout=10)
    assert answer(port, "moved.example.com").answer[0][0].address == "192.0.2.71"
    assert f"IN IXFR NOERROR IXFR {SERIAL} -> {SERIAL + 1}, 1 records" in (tmp_path / "q.log").read_text()
    wait_until(lambda: kept_address(data, "moved.example.com") == "192.0.2.71", "kept in --data", sec)
    # a NOTIFY for a zone it does not serve
    notify = dns.message.make_query("example.org", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dns.query.udp(notify, "127.0.0.1", port=port, timeout=3).rcode() == dns.rcode.NOTAUTH
    # restart with the primary gone: the kept zone answers at once
    prim.stop()
    sec.stop()
    sec = secondary(sockhop_server, f"example.com@127.0.0.1:{pport},key=upd", port, "--data", str(data))
    assert answer(port, "moved.example.com").answer[0][0].address == "192.0.2.71"


def kept_address(data, name: str) -> str | None:
    """The address of ``name`` in the zone the secondary keeps in ``data`` (written once it is served)."""
    from sockhop.dns.secondary import load_kept, zone_path

    origin = dns.name.from_text("example.com")
    kept = load_kept(zone_path(data, origin), origin)
    rrset = kept[0].get(dns.name.from_text(name), dns.rdatatype.A) if kept is not None else None
    return rrset[0].address if rrset is not None else None


def test_notify_from_another_address_is_refused(sockhop_server, tmp_path):
    port = free_port()
    sec = secondary(sockhop_server, "example.com@127.0.0.2:9", port)
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dns.query.udp(notify, "127.0.0.1", port=port, timeout=3).rcode() == dns.rcode.REFUSED
    assert answer(port, "www.example.com").rcode() == dns.rcode.SERVFAIL  # never transferred
    signed = dns.message.make_query("example.com", "SOA")
    signed.set_opcode(dns.opcode.NOTIFY)
    signed.use_tsig(dns.tsigkeyring.from_text({"upd": SECRET}), algorithm="hmac-sha256")
    assert dns.query.udp(signed, "127.0.0.1", port=port, timeout=3).rcode() == dns.rcode.REFUSED
    assert "cannot connect" in "\n".join(sec.lines) or wait_for_line(sec, "cannot connect")


def wait_for_line(server, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in server.lines):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    return True


def test_primary_gone_serves_until_expire_then_servfail(sockhop_server, tmp_path):
    zone = write_zone(tmp_path, EXAMPLE.replace("7200 900 1209600", "1 1 3"))
    port = free_port()
    prim, pport = primary(sockhop_server, zone)
    sec = secondary(sockhop_server, f"example.com@127.0.0.1:{pport},key=upd", port, "--data", str(tmp_path / "d"))
    wait_until(lambda: serial_of(port) == SERIAL, "the first transfer", sec)
    prim.stop()
    gone = time.monotonic()
    assert answer(port, "www.example.com").rcode() == dns.rcode.NOERROR  # serves on, retrying every second
    wait_until(lambda: answer(port, "www.example.com").rcode() == dns.rcode.SERVFAIL, "expiry", sec, timeout=10)
    assert time.monotonic() - gone > 0.5
    assert wait_for_line(sec, "expired: no contact with")
    # a restart after the expire time: still SERVFAIL, not the stale zone
    sec.stop()
    sec = secondary(sockhop_server, f"example.com@127.0.0.1:{pport},key=upd", port, "--data", str(tmp_path / "d"))
    assert answer(port, "www.example.com").rcode() == dns.rcode.SERVFAIL


class FakePrimary:
    """A TCP listener that answers each transfer request with what ``replies`` gives in turn (bytes to send before
    closing), counting the requests."""

    def __init__(self, replies) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.replies = list(replies)
        self.requests: list[dns.message.Message] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        self.sock.settimeout(20)
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = conn.recv(2)
                (size,) = struct.unpack("!H", head)
                wire = b""
                while len(wire) < size:
                    wire += conn.recv(size - len(wire))
                query = dns.message.from_wire(wire, keyring=dns.tsigkeyring.from_text({"upd": SECRET}))
                self.requests.append(query)
                conn.sendall(self.replies.pop(0)(query))

    def close(self) -> None:
        self.sock.close()


def axfr_bytes(query: dns.message.Message, text: str, signed: bool = True) -> bytes:
    """The whole zone in one message, signed as the request was (or, ``signed`` False, not)."""
    zone = dns.zone.from_text(text, relativize=False)
    response = dns.message.make_response(query)
    if not signed:
        response.tsig = None
    soa = zone.find_rrset(zone.origin, "SOA")
    response.answer = [soa]
    for name, rdataset in zone.iterate_rdatasets():
        if rdataset.rdtype != dns.rdatatype.SOA:
            response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))
    response.answer.append(soa)
    wire = response.to_wire()
    return struct.pack("!H", len(wire)) + wire


def test_a_transfer_cut_off_or_garbled_leaves_the_zone(sockhop_server, tmp_path):
    """The kept zone (serial S) is served; the fake primary offers S+1 cut in half, then garbage, then unsigned
    (the request was signed), then whole and signed."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "example.com.zone").write_text(EXAMPLE.replace("7200 900 1209600", "3600 1 1209600"))
    newer = EXAMPLE.replace(str(SERIAL), str(SERIAL + 1)).replace("192.0.2.2", "192.0.2.200")

    def half(query):
        whole = axfr_bytes(query, newer)
        return whole[: len(whole) // 2]

    def garbage(query):
        return struct.pack("!H", 40) + struct.pack("!H", query.id) + b"\x84\x00" + b"\xff" * 36

    def unsigned(query):
        return axfr_bytes(query, newer, signed=False)

    def whole(query):
        return axfr_bytes(query, newer)

    fake = FakePrimary([half, garbage, unsigned, whole])
    port = free_port()
    try:
        sec = secondary(sockhop_server, f"example.com@127.0.0.1:{fake.port},key=upd", port, "--data", str(data))
        assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.2"  # at once, from --data
        wait_for_line(sec, "closed the connection")
        assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.2"
        wait_for_line(sec, "cannot be read")
        assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.2"
        wait_for_line(sec, "not signed")
        assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.2"
        assert str(SERIAL + 1) not in (data / "example.com.zone").read_text()
        wait_until(lambda: serial_of(port) == SERIAL + 1, "the whole transfer", sec)
        assert answer(port, "www.example.com").answer[0][0].address == "192.0.2.200"
        assert all(q.question[0].rdtype == dns.rdatatype.IXFR for q in fake.requests)  # it had a serial to give
        failures = [line for line in sec.lines if "failed" in line]
        assert len(failures) == 3, failures  # one line each
    finally:
        fake.close()


@pytest.mark.parametrize("model", ["pool", "thread", "iterative", "fork", "prefork"])
def test_secondary_under_the_other_models(sockhop_server, tmp_path, model):
    """Under prefork the master's job transfers and keeps the zone in --data; the workers read it on the SIGHUP
    it sends itself (forwarded to them), and a NOTIFY a worker takes wakes the master's job."""
    zone = write_zone(tmp_path, EXAMPLE)
    prim, pport = primary(sockhop_server, zone)
    port = free_port()
    extra = ["--tcp-only"] if model in ("thread", "fork") else []
    if model == "prefork":
        extra = ["--workers", "2", "--data", str(tmp_path / "data")]
    sec = secondary(sockhop_server, f"example.com@127.0.0.1:{pport},key=upd", port, *extra, model=model)
    tcp = bool(extra)
    wait_until(lambda: serial_of(port, tcp) == SERIAL, "the first transfer", sec)
    assert nsupdate(pport, "update add m.example.com 300 A 192.0.2.33").returncode == 0
    notify = dns.message.make_query("example.com", "SOA")  # from the primary's address: taken
    notify.set_opcode(dns.opcode.NOTIFY)
    send = dns.query.tcp if tcp else dns.query.udp
    assert send(notify, "127.0.0.1", port=port, timeout=3).rcode() == dns.rcode.NOERROR
    wait_until(lambda: serial_of(port, tcp) == SERIAL + 1, "IXFR after NOTIFY", sec)
    for _ in range(6):  # every worker
        assert answer(port, "m.example.com", tcp=tcp).answer[0][0].address == "192.0.2.33"


def test_secondary_and_notify_mistakes():
    from sockhop.dns.secondary import parse_secondary, parse_target
    from sockhop.dns.tsig import keyring
    from sockhop.errors import UsageError

    ring = keyring([f"upd:{SECRET}"])
    assert parse_secondary("example.com@127.0.0.1,key=upd", ring)[1].address == ("127.0.0.1", 53)
    assert parse_target("--notify", "[::1]:5354", ring).address == ("::1", 5354)
    for text, words in (
        ("example.com", "ZONE@PRIMARY"),
        ("example.com@ns.example.net", "not an IP address"),
        ("example.com@127.0.0.1,key=nope", "no such key"),
        ("example.com@127.0.0.1,tls", "unknown option"),
        ("example.com@127.0.0.1:99999", "out of range"),
    ):
        with pytest.raises(UsageError, match=words):
            parse_secondary(text, ring)


def test_secondary_mistakes_are_one_line(tmp_path):
    import subprocess
    import sys

    for args, words in (
        (["--secondary", "example.com@ns.example.net"], "not an IP address"),
        (["--secondary", "a.test@127.0.0.1", "--model", "prefork"], "needs --data"),
        ([], "give a ZONEFILE"),
    ):
        done = subprocess.run([sys.executable, "-m", "sockhop", "serve", "dns", "--listen", "127.0.0.1:0", *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and words in done.stderr, (args, done.stderr)
