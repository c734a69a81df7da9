"""Beyond one machine, for real: HAProxy (the Debian package) in front of two sockhop web instances and two DNS
instances on their own loopback addresses, PROXY protocol on. Traffic reaches both; one instance is killed with
SIGKILL and, once HAProxy's health check has noticed, the clients see no failed request; restarted on the same
address and port, it rejoins. docs/scale-out.md tells the same story."""

from __future__ import annotations

import time

import dns.message
import dns.query
import pytest

from tests.dns.zones import write_zone
from tests.prod.haproxy import haproxy
from tests.prod.helpers import fetch, site_saying
from tests.support import require_tool

NOTICE = 1.0  # HAProxy checks every 200 ms and marks a server down after one failure: well within this
ROUNDS = 400  # every client loop is bounded in count and time
SECONDS = 20.0


def web_instance(sockhop_server, tmp_path, name: str, listen: str):
    site = site_saying(tmp_path / name, name)
    return sockhop_server(["serve", "web", str(site), "--listen", listen, "--no-access-log", "--model", "eventloop",
                           "--proxy-protocol", "127.0.0.1"])  # fmt: skip


def dns_instance(sockhop_server, tmp_path, name: str, listen: str):
    (tmp_path / name).mkdir()
    zone = write_zone(tmp_path / name)
    return sockhop_server(["serve", "dns", str(zone), "--listen", listen, "--proxy-protocol", "127.0.0.1",
                           "--query-log", str(tmp_path / f"{name}.log")], announce=2)  # fmt: skip


def ask(host: str, port: int) -> bool:
    try:
        answer = dns.query.tcp(dns.message.make_query("example.com.", "SOA"), host, port=port, timeout=5)
    except (OSError, dns.exception.DNSException, EOFError):
        return False
    return answer.rcode() == 0 and bool(answer.answer)


def get(host: str, port: int) -> bytes | None:
    try:
        status, body = fetch(host, port, timeout=5)
    except OSError:
        return None
    return body if status == 200 else None


@pytest.mark.interop
def test_haproxy_fails_over_and_the_instance_rejoins(sockhop_server, tmp_path):
    require_tool("haproxy")
    web_a = web_instance(sockhop_server, tmp_path, "A", "127.0.0.21:0")
    web_b = web_instance(sockhop_server, tmp_path, "B", "127.0.0.22:0")
    dns_a = dns_instance(sockhop_server, tmp_path, "dnsA", "127.0.0.31:0")
    dns_b = dns_instance(sockhop_server, tmp_path, "dnsB", "127.0.0.32:0")
    backends = {
        "web": [web_a.address("web"), web_b.address("web")],
        "dns": [dns_a.address("dns", "tcp"), dns_b.address("dns", "tcp")],
    }
    with haproxy(tmp_path, backends, server_options="send-proxy-v2") as fronts:
        web, dns_front = fronts["web"], fronts["dns"]
        # 1. both instances of each service answer
        seen = {get(*web) for _ in range(10)}
        assert seen == {b"A", b"B"}, seen
        assert all(ask(*dns_front) for _ in range(10))
        assert (tmp_path / "dnsA.log").read_text() and (tmp_path / "dnsB.log").read_text()

        # 2. kill A and dnsA outright; count failures after HAProxy had time to notice
        killed_at = time.monotonic()
        web_a.proc.kill()
        dns_a.proc.kill()
        web_a.proc.wait()
        dns_a.proc.wait()
        late_failures, early_failures, answered = 0, 0, 0
        deadline = time.monotonic() + SECONDS
        for _ in range(ROUNDS):
            if time.monotonic() > deadline or answered >= 100:
                break
            ok = get(*web) == b"B" and ask(*dns_front)
            if ok:
                answered += 1
            elif time.monotonic() - killed_at < NOTICE:
                early_failures += 1
            else:
                late_failures += 1
        print(f"fail-over: {early_failures} failed within {NOTICE}s of the kill, {late_failures} after; {answered} ok")
        assert late_failures == 0
        assert answered >= 100

        # 3. A comes back on the same address and port and gets traffic again
        web_a2 = web_instance(sockhop_server, tmp_path, "A2", f"{web_a.address('web')[0]}:{web_a.address('web')[1]}")
        restarted_at = time.monotonic()
        deadline = restarted_at + SECONDS
        back = set()
        for _ in range(ROUNDS):
            back.add(get(*web))
            if b"A2" in back or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(f"fail-over: the restarted instance got traffic {time.monotonic() - restarted_at:.2f}s after it started")
        assert b"A2" in back and None not in back, back
        assert web_a2.proc.poll() is None
