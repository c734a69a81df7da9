"""Zones that move, driven by BIND's own tools: nsupdate -y changes a zone (prerequisites honoured, the serial
bumped, synced to the journal before the answer, there again after SIGKILL), dig ixfr=SERIAL gets the changes,
SIGHUP with an edited file journals the difference, and ``sockhop dns fold`` writes the journal into the file."""

from __future__ import annotations

import base64
import signal
import socket
import struct
import subprocess
import sys
import time

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from tests.dns.peers import start_named, start_nsd
from tests.dns.zones import EXAMPLE, write_zone
from tests.support import end_process, require_tool

pytestmark = pytest.mark.interop

SECRET = base64.b64encode(bytes(range(7, 39))).decode()
KEY = f"hmac-sha256:upd:{SECRET}"
SERIAL = 2024010101


def serve(sockhop_server, zone, *extra, model="eventloop"):
    log = zone.parent / "queries.log"
    args = ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", model, "--query-log", str(log)]
    server = sockhop_server(
        [*args, "--tsig", f"upd:{SECRET}", "--allow-update", "key:upd", "--allow-transfer", "key:upd", *extra],
        announce=2,
    )
    return server, server.address("dns", "udp")[1]


def nsupdate(port: int, commands: str, *options: str, key: str | None = KEY) -> subprocess.CompletedProcess:
    script = f"server 127.0.0.1 {port}\nzone example.com\n{commands}\nsend\n"
    args = [require_tool("nsupdate"), "-t", "10", *options] + (["-y", key] if key else [])
    return subprocess.run(args, input=script, capture_output=True, text=True, timeout=60)


def dig(port: int, *args: str) -> str:
    done = subprocess.run(
        [require_tool("dig"), "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def queries(folder) -> str:
    path = folder / "queries.log"
    return path.read_text() if path.exists() else ""


def serial(port: int) -> int:
    return int(dig(port, "+short", "example.com", "SOA").split()[2])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_nsupdate_adds_deletes_and_bumps_the_serial(sockhop_server, tmp_path, transport):
    zone = write_zone(tmp_path)
    server, port = serve(sockhop_server, zone)
    dig(port, "+short", "new.example.com", "A")  # an answer the reply cache now holds
    assert "XFR size: 42 records" in dig(port, "-y", KEY, "example.com", "AXFR")  # and the transfer, encoded
    options = ["-v"] if transport == "tcp" else []
    done = nsupdate(port, "update add new.example.com 300 A 192.0.2.77\nupdate delete www.example.com AAAA", *options)
    assert done.returncode == 0, done.stderr  # nsupdate checked the answer's TSIG too (else "tsig verify failure")
    assert dig(port, "+short", "new.example.com", "A").strip() == "192.0.2.77"  # the cache saw the change
    assert dig(port, "+short", "www.example.com", "AAAA").strip() == ""
    assert serial(port) == SERIAL + 1
    out = dig(port, "-y", KEY, "example.com", "AXFR")  # the new version's transfer
    assert "XFR size: 42 records" in out and "192.0.2.77" in out and "2001:db8::2" not in out
    journal = (tmp_path / "example.com.zone.jnl").read_text()
    assert (
        journal.startswith(f"$CHANGE {SERIAL} {SERIAL + 1}\n") and "+ new.example.com. 300 IN A 192.0.2.77" in journal
    )
    assert f"{transport} UPDATE example.com. NOERROR serial {SERIAL} -> {SERIAL + 1}" in queries(tmp_path)


def test_prerequisites_with_nsupdate(sockhop_server, tmp_path):
    _, port = serve(sockhop_server, write_zone(tmp_path))
    cases = [
        ("prereq nxdomain www.example.com", "YXDOMAIN"),
        ("prereq yxdomain nothere.example.com", "NXDOMAIN"),
        ("prereq nxrrset www.example.com A", "YXRRSET"),
        ("prereq yxrrset www.example.com MX", "NXRRSET"),
        ("prereq yxrrset www.example.com A 192.0.2.99", "NXRRSET"),
    ]
    for prereq, rcode in cases:
        done = nsupdate(port, f"{prereq}\nupdate add new.example.com 300 A 192.0.2.77")
        assert done.returncode != 0 and rcode in done.stderr, (prereq, done.stderr)
    assert serial(port) == SERIAL and dig(port, "+short", "new.example.com", "A").strip() == ""
    done = nsupdate(port, "prereq nxdomain new.example.com\nprereq yxrrset www.example.com A 192.0.2.2\n"
                    "update add new.example.com 300 A 192.0.2.77")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert serial(port) == SERIAL + 1


def test_who_may_update(sockhop_server, tmp_path):
    server, port = serve(sockhop_server, write_zone(tmp_path))
    done = nsupdate(port, "update add new.example.com 300 A 192.0.2.77", key=None)  # unsigned
    assert done.returncode != 0 and "REFUSED" in done.stderr
    other = base64.b64encode(bytes(32)).decode()
    done = nsupdate(port, "update add new.example.com 300 A 192.0.2.77", key=f"hmac-sha256:upd:{other}")
    assert done.returncode != 0 and "NOTAUTH" in done.stderr  # BADSIG
    done = nsupdate(port, "update add new.example.com 300 A 192.0.2.77", key=f"hmac-sha256:stranger:{SECRET}")
    assert done.returncode != 0 and "NOTAUTH" in done.stderr  # BADKEY
    assert serial(port) == SERIAL and not (tmp_path / "example.com.zone.jnl").exists()
    assert "UPDATE example.com. (unsigned) REFUSED" in queries(tmp_path)


def test_garbage_and_truncated_updates_change_nothing(sockhop_server, tmp_path):
    server, port = serve(sockhop_server, write_zone(tmp_path))
    message = dns.update.UpdateMessage("example.com.")
    message.add("new", 300, "A", "192.0.2.77")
    wire = message.to_wire()
    for bad in (wire[:-3], wire[:12] + b"\xff" * 20, wire + b"trailing"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(bad, ("127.0.0.1", port))
            reply = sock.recv(512)
        assert reply[:2] == bad[:2] and reply[3] & 0x0F == dns.rcode.FORMERR
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # over TCP, cut short
            sock.sendall(struct.pack("!H", len(bad)) + bad)
            size = struct.unpack("!H", sock.recv(2))[0]
            assert sock.recv(size)[3] & 0x0F == dns.rcode.FORMERR
    assert serial(port) == SERIAL and dig(port, "+short", "www.example.com", "A").strip() == "192.0.2.2"
    assert queries(tmp_path).count("UPDATE malformed FORMERR") == 6  # one line each
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a transfer request cut short
        query = bytearray(dns.message.make_query("example.com", "AXFR", use_edns=False).to_wire())
        query[11] = 1  # one additional record promised, none sent
        query = bytes(query)
        sock.sendall(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", sock.recv(2))[0]
        assert sock.recv(size)[3] & 0x0F == dns.rcode.FORMERR
    deadline = time.monotonic() + 10
    while sum("malformed FORMERR" in line for line in server.log().splitlines()) < 4:  # over TCP: in the log too
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert "transfer malformed FORMERR" in server.log() and "Traceback" not in server.log()


def test_an_acknowledged_update_survives_sigkill(sockhop_server, tmp_path):
    zone = write_zone(tmp_path)
    server, port = serve(sockhop_server, zone)
    done = nsupdate(port, 'update add durable.example.com 300 TXT "kept"', "-v")
    assert done.returncode == 0, done.stderr
    server.stop(signal.SIGKILL)  # straight after the answer: no chance to write anything more
    again, port = serve(sockhop_server, zone)
    assert dig(port, "+short", "durable.example.com", "TXT").strip() == '"kept"'
    assert serial(port) == SERIAL + 1
    # and the next update follows on
    assert nsupdate(port, "update delete durable.example.com TXT").returncode == 0
    assert serial(port) == SERIAL + 2 and dig(port, "+short", "durable.example.com", "TXT").strip() == ""


def test_ixfr_from_the_journal_else_axfr(sockhop_server, tmp_path):
    _, port = serve(sockhop_server, write_zone(tmp_path))
    assert nsupdate(port, "update add a1.example.com 300 A 192.0.2.201").returncode == 0
    assert (
        nsupdate(port, "update delete www.example.com A\nupdate add a2.example.com 300 A 192.0.2.202").returncode == 0
    )
    out = dig(port, "-y", KEY, "example.com", f"IXFR={SERIAL}")
    records = [line for line in out.splitlines() if line and not line.startswith(";") and "TSIG" not in line]
    assert [line.split()[3] for line in records] == ["SOA", "SOA", "SOA", "A", "SOA", "A", "SOA", "A", "SOA"]
    assert "www.example.com.\t3600\tIN\tA\t192.0.2.2" in records[5]  # deleted in the second change
    assert "XFR size: 9 records" in out and "Transfer failed" not in out
    out = dig(port, "-y", KEY, "example.com", f"IXFR={SERIAL + 2}")  # up to date: the SOA alone
    assert "XFR size: 1 records" in out
    out = dig(port, "-y", KEY, "example.com", "IXFR=2000010101")  # older than the journal: the whole zone
    assert "XFR size: 43 records" in out
    out = dig(port, "+notcp", "-y", KEY, "example.com", f"IXFR={SERIAL}")  # UDP: the SOA, go to TCP
    assert "(UDP)" in out and f"{SERIAL + 2} 7200" in out and out.count("\tSOA\t") == 1
    out = dig(port, "example.com", f"IXFR={SERIAL}")  # unsigned: refused
    assert "Transfer failed" in out


def test_sighup_with_an_edited_zone_journals_the_difference(sockhop_server, tmp_path):
    zone = write_zone(tmp_path, EXAMPLE)
    server, port = serve(sockhop_server, zone)
    zone.write_text(EXAMPLE.replace(f"{SERIAL} ; serial", f"{SERIAL + 5} ; serial").replace("192.0.2.2", "192.0.2.22"))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while f"{SERIAL} -> {SERIAL + 5} journaled for IXFR" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    out = dig(port, "-y", KEY, "example.com", f"IXFR={SERIAL}")
    assert "XFR size: 6 records" in out  # SOA, old SOA, the old A, new SOA, the new A, SOA
    assert "192.0.2.22" in out and "192.0.2.2\n" in out


def test_fold_writes_the_journal_into_the_zone_file(sockhop_server, tmp_path):
    zone = write_zone(tmp_path)
    server, port = serve(sockhop_server, zone)
    assert nsupdate(port, "update add folded.example.com 300 A 192.0.2.88").returncode == 0
    server.stop()
    done = subprocess.run(
        [sys.executable, "-m", "sockhop", "dns", "fold", str(zone)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert f"folded 1 changes, serial {SERIAL} -> {SERIAL + 1}" in done.stdout
    assert "folded.example.com. 300 IN A 192.0.2.88" in zone.read_text()
    assert (tmp_path / "example.com.zone.jnl").read_text() == ""
    _, port = serve(sockhop_server, zone)
    assert dig(port, "+short", "folded.example.com", "A").strip() == "192.0.2.88" and serial(port) == SERIAL + 1
    assert dig(port, "+short", "big.example.com", "TXT").count("\n") == 12  # everything else is still there


def test_online_signed_zone_signs_the_change(sockhop_server, tmp_path):
    zone = write_zone(tmp_path, EXAMPLE)
    key = tmp_path / "example.com.key"
    subprocess.run(
        [sys.executable, "-m", "sockhop", "dns", "keygen", "example.com", "--key", str(key)], check=True, timeout=30,
        capture_output=True,
    )  # fmt: skip
    _, port = serve(sockhop_server, zone, "--sign", str(key))
    before = dig(port, "+dnssec", "example.com", "SOA")
    assert nsupdate(port, "update add signed.example.com 300 A 192.0.2.66").returncode == 0
    out = dig(port, "+dnssec", "signed.example.com", "A")
    assert "192.0.2.66" in out and "RRSIG\tA 13" in out
    soa = dig(port, "+dnssec", "example.com", "SOA")
    assert f"{SERIAL + 1}" in soa and soa.split("RRSIG")[1] != before.split("RRSIG")[1]  # the new SOA signed anew
    ring = dns.tsigkeyring.from_text({"upd": ("hmac-sha256", SECRET)})
    query = dns.message.make_query("example.com", "SOA")
    query.use_tsig(ring, "upd")
    assert dns.query.udp(query, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NOERROR


def test_updates_need_one_process(tmp_path):
    zone = write_zone(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "dns", str(zone), "--model", "prefork", "--allow-update",
         "127.0.0.1"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--allow-update" in done.stderr


def start_nsd_secondary(folder, primary_port: int):
    """NSD as a secondary of sockhop: it pulls example.com with TSIG key upd, and takes NOTIFY signed with it."""
    zone = f'    zonefile: "{folder}/example.com.zone"\n    request-xfr: 127.0.0.1@{primary_port} upd\n'
    return start_nsd(folder, zone + "    allow-notify: 127.0.0.1 upd\n", SECRET)


def soa_serial(port: int) -> int | None:
    try:
        reply = dns.query.udp(dns.message.make_query("example.com", "SOA"), "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None
    return reply.answer[0][0].serial if reply.answer and reply.rcode() == dns.rcode.NOERROR else None


def wait_for_serial(port: int, want: int, log) -> None:
    deadline = time.monotonic() + 30
    while soa_serial(port) != want:
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.2)


def test_nsd_pulls_axfr_then_ixfr_with_tsig(sockhop_server, tmp_path):
    """NSD refreshes on the SOA's timer (2 seconds here): sockhop does not send NOTIFY yet."""
    server, port = serve(sockhop_server, write_zone(tmp_path, EXAMPLE.replace("7200 900 1209600", "2 2 1209600")))
    proc, nsd = start_nsd_secondary(tmp_path / "nsd", port)
    log = tmp_path / "nsd" / "nsd.log"
    try:
        wait_for_serial(nsd, SERIAL, log)  # the first transfer: the whole zone
        assert "IN AXFR NOERROR 29 records" in queries(tmp_path)
        assert nsupdate(port, "update add fromnsd.example.com 300 A 192.0.2.55").returncode == 0
        wait_for_serial(nsd, SERIAL + 1, log)
        assert f"IN IXFR NOERROR IXFR {SERIAL} -> {SERIAL + 1}, 1 records" in queries(tmp_path)
        answer = dns.query.udp(dns.message.make_query("fromnsd.example.com", "A"), "127.0.0.1", port=nsd, timeout=5)
        assert answer.answer[0][0].address == "192.0.2.55"
    finally:
        end_process(proc)


def test_data_folder_holds_the_journal(sockhop_server, tmp_path):
    zone = write_zone(tmp_path)
    data = tmp_path / "state" / "dns"
    server, port = serve(sockhop_server, zone, "--data", str(data))
    assert nsupdate(port, "update add kept.example.com 300 A 192.0.2.44", "-v").returncode == 0
    assert "+ kept.example.com. 300 IN A 192.0.2.44" in (data / "example.com.jnl").read_text()
    assert not (tmp_path / "example.com.zone.jnl").exists()
    server.stop(signal.SIGKILL)
    _, port = serve(sockhop_server, zone, "--data", str(data))
    assert dig(port, "+short", "kept.example.com", "A").strip() == "192.0.2.44"


def test_bind_pulls_axfr_then_ixfr_with_tsig(sockhop_server, tmp_path):
    """BIND's named as a secondary of sockhop, its requests signed with key upd, refreshing every second."""
    server, port = serve(sockhop_server, write_zone(tmp_path, EXAMPLE.replace("7200 900 1209600", "1 1 1209600")))
    folder = tmp_path / "bind"
    proc, bind_port, log = start_named(
        folder,
        f"""\
  type secondary;
  primaries port {port} {{ 127.0.0.1 key upd; }};
  file "{folder}/example.com.db";
  masterfile-format text;
  min-refresh-time 1;
  min-retry-time 1;
""",
        SECRET,
        notify="no",
    )
    try:
        wait_for_serial(bind_port, SERIAL, log)
        assert "IN AXFR NOERROR 29 records" in queries(tmp_path)
        assert nsupdate(port, "update add frombind.example.com 300 A 192.0.2.56").returncode == 0
        wait_for_serial(bind_port, SERIAL + 1, log)
        assert f"IN IXFR NOERROR IXFR {SERIAL} -> {SERIAL + 1}, 1 records" in queries(tmp_path)
        query = dns.message.make_query("frombind.example.com", "A")
        answer = dns.query.udp(query, "127.0.0.1", port=bind_port, timeout=5)
        assert answer.answer[0][0].address == "192.0.2.56"
        assert "Transfer status: success" in log.read_text() and "TSIG upd" in log.read_text()
    finally:
        end_process(proc)


@pytest.mark.parametrize("model", ["pool", "iterative", "thread"])
def test_updates_under_the_other_single_process_models(sockhop_server, tmp_path, model):
    zone = write_zone(tmp_path)
    log = tmp_path / "queries.log"
    args = ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", model, "--query-log", str(log)]
    args += ["--tsig", f"upd:{SECRET}", "--allow-update", "key:upd"] + (["--tcp-only"] if model == "thread" else [])
    server = sockhop_server(args, announce=1 if model == "thread" else 2)
    port = server.address("dns", "tcp")[1]
    done = nsupdate(
        port, "update add m.example.com 300 A 192.0.2.31\nsend\nupdate add n.example.com 300 A 192.0.2.32", "-v"
    )
    assert done.returncode == 0, done.stderr
    out = dig(port, "+tcp", "+short", "n.example.com", "A")
    assert out.strip() == "192.0.2.32" and f"{SERIAL + 2}" in dig(port, "+tcp", "+short", "example.com", "SOA")
