"""sockhop serve dns as a user runs it: start-up errors in one line, SIGHUP reload, the query log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import dns.message
import dns.query
import pytest

from tests.dns.zones import EXAMPLE, EXAMPLE_ORG, write_zone


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=30)


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_broken_zone_stops_start_up_with_file_line_reason(tmp_path):
    good = write_zone(tmp_path, EXAMPLE_ORG, "example.org.zone")
    bad = write_zone(tmp_path, EXAMPLE.replace("mail IN A 192.0.2.3", "mail IN A 192.0.2.300"), "example.com.zone")
    done = run("serve", "dns", str(good), str(bad), "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    line = EXAMPLE.splitlines().index("mail IN A 192.0.2.3") + 1
    assert done.stderr.startswith(f"sockhop: {bad}:{line}: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_missing_zone_file_and_bad_transfer_list(tmp_path):
    done = run("serve", "dns", str(tmp_path / "nope.zone"))
    assert done.returncode == 1 and done.stderr == f"sockhop: {tmp_path / 'nope.zone'}: no such file\n"
    zone = write_zone(tmp_path, EXAMPLE_ORG, "example.org.zone")
    done = run("serve", "dns", str(zone), "--allow-transfer", "not-an-address")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--allow-transfer" in done.stderr


@pytest.mark.parametrize("model", ["eventloop", "prefork", "pool", "fork"])
def test_sighup_reloads_and_a_broken_reload_keeps_old_data(sockhop_server, tmp_path, model):
    path = write_zone(tmp_path, EXAMPLE_ORG, "example.org.zone")
    extra = ["--tcp-only"] if model == "fork" else []
    server = sockhop_server(
        ["serve", "dns", str(path), "--listen", "127.0.0.1:0", "--model", model, "--workers", "2", *extra],
        announce=1 if extra else 2,
    )
    port = server.address("dns", "tcp")[1]
    tcp = bool(extra)
    assert ask(port, "ns.example.org", tcp=tcp).answer[0][0].address == "192.0.2.100"

    path.write_text(EXAMPLE_ORG.replace("192.0.2.100", "192.0.2.101").replace(" 7 3600", " 8 3600"))
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: ask(port, "ns.example.org", tcp=tcp).answer[0][0].address == "192.0.2.101"), server.log()
    # The master and each worker reload and say so -- but a worker the master forks after its own reload (under
    # load the second may still be on its way when the test signals) starts with the new data and says nothing.
    processes = 2 if model == "prefork" else 1
    reloaded = "reloaded example.org. (serial 8)"
    assert wait_for(lambda: sum(reloaded in line for line in server.lines) >= processes), server.log()
    for _ in range(6):  # every worker has the new data
        assert ask(port, "ns.example.org", tcp=tcp).answer[0][0].address == "192.0.2.101"

    path.write_text(EXAMPLE_ORG + "broken IN A 1.2.3\n")
    server.proc.send_signal(signal.SIGHUP)
    failed = "reload failed, still serving the old"
    assert wait_for(lambda: sum(failed in line for line in server.lines) >= processes), server.log()
    assert any(f"{path}:6:" in line for line in server.lines)
    assert ask(port, "ns.example.org", tcp=tcp).answer[0][0].address == "192.0.2.101"
    assert server.proc.poll() is None


def test_query_log(sockhop_server, tmp_path):
    path = write_zone(tmp_path, EXAMPLE_ORG, "example.org.zone")
    log = tmp_path / "queries.log"
    server = sockhop_server(["serve", "dns", str(path), "--listen", "127.0.0.1:0", "--query-log", str(log)], announce=2)
    port = server.address("dns", "udp")[1]
    ask(port, "ns.example.org")
    ask(port, "ns.example.org")
    ask(port, "nope.example.org", tcp=True)
    assert wait_for(lambda: log.exists() and log.read_text().count("\n") >= 3)
    lines = log.read_text().splitlines()
    assert lines[0].endswith("udp ns.example.org. IN A NOERROR") and "127.0.0.1:" in lines[0]
    assert lines[2].endswith("tcp nope.example.org. IN A NXDOMAIN")


def test_no_query_log_by_default(sockhop_server, tmp_path):
    path = write_zone(tmp_path, EXAMPLE_ORG, "example.org.zone")
    server = sockhop_server(["serve", "dns", str(path), "--listen", "127.0.0.1:0"], announce=2)
    ask(server.address("dns", "udp")[1], "ns.example.org")
    assert not any("ns.example.org" in line for line in server.lines)
