"""SIGUSR2 through `sockhop up --config` as a user tries it: under running web and DNS clients, every service does
its zero-downtime restart, `up` watches the new masters (they become its children), nothing fails, and Ctrl-C
afterwards stops every process -- checked by PID."""

from __future__ import annotations

import re
import signal
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.dns.zones import write_zone
from tests.prod.helpers import site_saying
from tests.prod.test_restart import Load, alive, children

TOOK_OVER = re.compile(r"^sockhop up: (?P<name>\S+): master (?P<new>\d+) took over from (?P<old>\d+)$")
MAX_QUERIES = 3000  # the DNS loop is bounded in count and in time
MAX_SECONDS = 30.0


class DnsLoad:
    """Queries over UDP and TCP in turn. A UDP query is a failure only if three tries (a resolver's retries) all go
    unanswered; a TCP query fails on its first error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.ok = 0
        self.retried = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        query = dns.message.make_query("www.example.com", "A")
        for n in range(MAX_QUERIES):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                response = self.tcp(query) if n % 2 else self.udp(query)
            except Exception as exc:  # dnspython raises many kinds
                self.failures.append(f"{'tcp' if n % 2 else 'udp'}: {type(exc).__name__}: {exc}")
                continue
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                self.ok += 1
            else:
                self.failures.append(dns.rcode.to_text(response.rcode()))

    def tcp(self, query: dns.message.Message) -> dns.message.Message:
        return dns.query.tcp(query, self.host, port=self.port, timeout=10)

    def udp(self, query: dns.message.Message) -> dns.message.Message:
        for attempt in range(3):
            try:
                return dns.query.udp(query, self.host, port=self.port, timeout=1)
            except dns.exception.Timeout:
                if attempt == 2:
                    raise
                self.retried += 1
        raise AssertionError("unreachable")


def family(pid: int) -> list[int]:
    """A master and its workers."""
    return [pid, *children(pid)]


def test_sigusr2_to_up_restarts_every_service_and_ctrl_c_stops_everything(sockhop_server, tmp_path):
    site_saying(tmp_path / "www", "up")
    write_zone(tmp_path)
    (tmp_path / "sockhop.toml").write_text("""\
grace = 5

[services.web]
root = "www"
no-access-log = true
listen = ["127.0.0.1:0"]
model = "prefork"
workers = 2

[services.dns]
zonefiles = ["example.com.zone"]
listen = ["127.0.0.1:0"]
""")
    up = sockhop_server(["up", "--config", str(tmp_path / "sockhop.toml")], announce=3, timeout=60)
    web_address = up.address("web")
    dns_address = up.address("dns", "udp")
    assert up.address("dns", "tcp")[1] == dns_address[1]
    old = children(up.pid)
    assert len(old) == 2
    everyone = {pid for master in old for pid in family(master)}
    web, dns_load = Load(*web_address), DnsLoad(*dns_address)
    web.thread.start()
    dns_load.thread.start()
    try:
        web.wait_for(50)
        up.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(bool(TOOK_OVER.match(line)) for line in up.lines) < 2:
            time.sleep(0.05)
        taken = {m["name"]: (int(m["new"]), int(m["old"])) for line in up.lines if (m := TOOK_OVER.match(line))}
        assert set(taken) == {"web", "dns"}, up.log()
        assert {old_pid for _, old_pid in taken.values()} == set(old)
        new = [new_pid for new_pid, _ in taken.values()]
        assert sorted(children(up.pid)) == sorted(new)  # up's children now: the new masters, nothing else
        everyone |= {pid for master in new for pid in family(master)}
        web_before, dns_before = web.ok, dns_load.ok
        web.wait_for(web_before + 50)  # the new masters carry the load on their own
        deadline = time.monotonic() + 20
        while dns_load.ok < dns_before + 50 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        web.stopping.set()
        dns_load.stopping.set()
        web.thread.join(40)
        dns_load.thread.join(40)
    print(f"up --config restart: web {web.ok} ok, {len(web.failures)} failed; "
          f"dns {dns_load.ok} ok, {len(dns_load.failures)} failed, {dns_load.retried} UDP retries")  # fmt: skip
    assert web.failures == [], web.failures[:5]
    assert dns_load.failures == [], dns_load.failures[:5]
    assert web.ok >= web_before + 50 and dns_load.ok >= dns_before + 50
    announced = [line for line in up.lines if line.startswith("sockhop: web tcp ")]
    assert len(announced) == 2 and up.addresses[("web", "tcp")] == [web_address, web_address]

    assert up.stop(signal.SIGINT, timeout=30) == 0  # Ctrl-C
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in everyone):
        time.sleep(0.05)
    assert not [pid for pid in everyone if alive(pid)], up.log()
