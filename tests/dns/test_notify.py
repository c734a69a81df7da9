"""Zones moving between sockhop and the real servers: NSD takes sockhop's signed NOTIFY and transfers at once;
sockhop is the secondary of NSD (its NOTIFY after a SIGHUP) and of BIND (its NOTIFY and IXFR after nsupdate)."""

from __future__ import annotations

import signal
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dns.peers import free_port, start_named, start_nsd
from tests.dns.test_dynamic import KEY, SECRET, SERIAL, dig, nsupdate, start_nsd_secondary, wait_for_serial
from tests.dns.test_secondary import answer, secondary, serial_of, wait_until
from tests.dns.zones import EXAMPLE, write_zone
from tests.support import end_process

pytestmark = pytest.mark.interop

HOUR = EXAMPLE.replace("7200 900 1209600", "3600 600 1209600")  # no refresh within a test: only NOTIFY moves it


def test_nsd_transfers_on_sockhops_notify(sockhop_server, tmp_path):
    pport = free_port()
    folder = tmp_path / "nsd"
    proc, nsd = None, None
    try:
        proc, nsd = start_nsd_secondary(folder, pport)
        args = ["serve", "dns", str(write_zone(tmp_path, HOUR)), "--listen", f"127.0.0.1:{pport}", "-v"]
        args += ["--tsig", f"upd:{SECRET}", "--allow-update", "key:upd", "--allow-transfer", "key:upd"]
        server = sockhop_server([*args, "--notify", f"127.0.0.1:{nsd},key=upd"], announce=2)
        wait_for_serial(nsd, SERIAL, folder / "nsd.log")
        assert nsupdate(pport, "update add notified.example.com 300 A 192.0.2.81").returncode == 0
        started = time.monotonic()
        wait_for_serial(nsd, SERIAL + 1, folder / "nsd.log")
        assert time.monotonic() - started < 10  # the SOA says an hour: it was the NOTIFY
        assert dig(nsd, "+short", "notified.example.com", "A").strip() == "192.0.2.81"
        acked = f"serial {SERIAL + 1} to 127.0.0.1:{nsd}: NOERROR"
        wait_until(lambda: any(acked in line for line in server.lines), "NSD's answer to the NOTIFY", server)
    finally:
        if proc is not None:
            end_process(proc)


def start_nsd_primary(folder, secondary_port: int):
    """NSD serving example.com, transfers for key upd, NOTIFY signed with it to sockhop."""
    folder.mkdir()
    (folder / "example.com.zone").write_text(HOUR)
    zone = f'    zonefile: "{folder}/example.com.zone"\n    provide-xfr: 127.0.0.1 upd\n'
    return start_nsd(folder, zone + f"    notify: 127.0.0.1@{secondary_port} upd\n", SECRET)


def test_sockhop_secondary_of_nsd(sockhop_server, tmp_path):
    port = free_port()
    folder = tmp_path / "nsd"
    proc, nsd = start_nsd_primary(folder, port)
    try:
        wait_for_serial(nsd, SERIAL, folder / "nsd.log")
        sec = secondary(sockhop_server, f"example.com@127.0.0.1:{nsd},key=upd", port)
        wait_until(lambda: serial_of(port) == SERIAL, "AXFR from NSD", sec)
        assert answer(port, "www.example.com", "AAAA").answer[0][0].address == "2001:db8::2"
        zone = folder / "example.com.zone"
        zone.write_text(HOUR.replace(str(SERIAL), str(SERIAL + 1)) + "fromnsd IN A 192.0.2.91\n")
        proc.send_signal(signal.SIGHUP)  # NSD reads the zone again and notifies
        wait_until(lambda: serial_of(port) == SERIAL + 1, "NSD's NOTIFY, then the transfer", sec, timeout=20)
        assert answer(port, "fromnsd.example.com").answer[0][0].address == "192.0.2.91"
    finally:
        end_process(proc)


def test_sockhop_secondary_of_bind(sockhop_server, tmp_path):
    """BIND's named as primary: the first AXFR, then nsupdate to BIND, its NOTIFY, and IXFR from its journal."""
    port = free_port()
    folder = tmp_path / "bind"
    folder.mkdir()
    (folder / "example.com.db").write_text(HOUR)
    proc, bind, log = start_named(
        folder,
        f"""\
  type primary;
  file "{folder}/example.com.db";
  allow-transfer {{ key upd; }};
  allow-update {{ key upd; }};
  also-notify {{ 127.0.0.1 port {port}; }};
""",
        SECRET,
        notify="explicit",
    )
    try:
        wait_for_serial(bind, SERIAL, log)
        sec = secondary(sockhop_server, f"example.com@127.0.0.1:{bind},key=upd", port)
        wait_until(lambda: serial_of(port) == SERIAL, "AXFR from BIND", sec)
        assert nsupdate(bind, "update add frombind.example.com 300 A 192.0.2.92", key=KEY).returncode == 0
        wait_until(lambda: serial_of(port) == SERIAL + 1, "BIND's NOTIFY, then IXFR", sec, timeout=20)
        assert answer(port, "frombind.example.com").answer[0][0].address == "192.0.2.92"
        assert any("IXFR" in line and "1 records changed" in line for line in sec.lines), sec.log()
        assert answer(port, "nothere.example.com").rcode() == dns.rcode.NXDOMAIN
    finally:
        end_process(proc)
