"""Zero-downtime restart as a user tries it: under a running load, SIGUSR2 makes a new master take over the
listening sockets and the old one drain and exit; the load generator counts no failed request."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.clients import echo_once
from tests.prod.helpers import fetch, site_saying
from tests.prod.test_up_options import ANNOUNCED
from tests.test_up import loopback_host

RESTARTED = re.compile(r"^sockhop: restarted: new master (?P<pid>\d+) serves")
MAX_REQUESTS = 4000  # the load loop is bounded in count and in time
MAX_SECONDS = 30.0


class Load:
    """A client loop on fresh connections, counting what failed."""

    def __init__(self, host: str, port: int, path: str = "/who.txt", body: bytes | None = b"up") -> None:
        self.host, self.port, self.path, self.body = host, port, path, body
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(MAX_REQUESTS):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = fetch(self.host, self.port, self.path, timeout=10)
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200 and (self.body is None or body == self.body):
                self.ok += 1
            else:
                self.failures.append(f"{status} {body[:40]!r}")

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < count and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def end(pid: int) -> bool:
    """Stop the new master (not our child: the old master started it) and its workers; True if SIGTERM did it."""
    family = [pid, *children(pid)]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 20
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = not any(alive(p) for p in family)
    for p in family:
        if alive(p):
            os.kill(p, signal.SIGKILL)
    return stopped


def children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except OSError:
        return []


def new_master(server, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.lines):
            match = RESTARTED.match(line)
            if match:
                return int(match["pid"])
        time.sleep(0.05)
    raise AssertionError(f"no restart: {server.log()}")


@contextmanager
def restarted_under_load(old, load: Load, more: int, label: str) -> Iterator[int]:
    """Run ``load`` against ``old``, send SIGUSR2 once ``more`` requests have passed, and yield the new master's pid
    once the old one has drained and exited and the new one has carried ``more`` requests on its own, none failed.
    On the way out the load stops and the new master is ended (it is not our child: the old master started it)."""
    load.thread.start()
    pid = None
    try:
        load.wait_for(more)
        old.proc.send_signal(signal.SIGUSR2)
        pid = new_master(old)
        assert old.proc.wait(30) == 0  # the old master drained and exited
        before = load.ok
        load.wait_for(before + more)  # the new one carries the load on its own
        load.stopping.set()
        load.thread.join(30)
        print(f"restart ({label}): {load.ok} requests ok, {len(load.failures)} failed, {before} before the old exited")
        assert load.failures == [], load.failures[:5]
        assert load.ok >= before + more
        yield pid
        assert end(pid), "the new master did not stop on SIGTERM"
        pid = None
    finally:
        load.stopping.set()
        load.thread.join(30)
        if pid is not None:
            end(pid)


@pytest.mark.parametrize("model", ["eventloop", "prefork", "thread"])
def test_sigusr2_restarts_with_no_failed_request(sockhop_server, tmp_path, model):
    site = site_saying(tmp_path / "site", "up")
    old = sockhop_server(["serve", "web", str(site), "--listen", "127.0.0.1:0", "--no-access-log",
                          "--model", model, "--workers", "2", "--admin", "127.0.0.1:0"], announce=2)  # fmt: skip
    host, port = old.address("web")
    admin = old.address("admin")
    with restarted_under_load(old, Load(host, port), 50, model) as pid:
        assert alive(pid)
        announced = [line for line in old.lines if line.startswith(f"sockhop: web tcp {host}:{port} (model {model}")]
        assert len(announced) == 2  # the old master, then the new one, on the same socket
        assert old.addresses[("admin", "tcp")] == [admin, admin]  # the admin listener is handed over too
        with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
        # The new master counts in a folder of its own: the old one removed its folder when it exited.
        with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/metrics", timeout=10) as response:
            scraped = {s.name: s.value for f in text_string_to_metric_families(response.read().decode())
                       for s in f.samples if s.labels.get("service") == "web"}  # fmt: skip
        assert scraped["sockhop_connections_total"] >= 50


def test_a_new_master_that_cannot_start_leaves_the_old_one_serving(sockhop_server, tmp_path):
    site = site_saying(tmp_path / "site", "up")
    old = sockhop_server(["serve", "web", str(site), "--listen", "127.0.0.1:0", "--no-access-log"])
    host, port = old.address("web")
    site.rename(tmp_path / "moved")  # the same command line now names a missing folder
    old.proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not any("restart failed" in line for line in old.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("restart failed: the new master" in line for line in old.lines), old.log()
    assert old.proc.poll() is None
    (tmp_path / "moved").rename(site)
    assert fetch(host, port) == (200, b"up")


def test_sigusr2_restarts_up_with_every_service(sockhop_server, tmp_path):
    """`sockhop up` without a file hands all its sockets over too: web under load, then echo on TCP and UDP, the
    admin listener and the dashboard are served by the new master on the same sockets."""
    host = loopback_host()
    old = sockhop_server(["up", "--host", host, "--data", str(tmp_path / "data"), "--no-tls",
                          "--admin", "127.0.0.1:0"], announce=ANNOUNCED, timeout=60)  # fmt: skip
    admin = old.address("admin")
    with restarted_under_load(old, Load(host, 8080, path="/", body=None), 20, "up"):
        assert echo_once((host, 7007), b"still here\n") == b"still here\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(b"and on udp", (host, 7007))
            assert udp.recv(100) == b"and on udp"
        with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
        with urllib.request.urlopen(f"http://{host}:8025/api/v1/services", timeout=10) as response:  # the dashboard
            assert "web" in [service["name"] for service in json.load(response)["services"]]
        assert sum(line.startswith("sockhop up: every service") for line in old.lines) == 2  # old, then new
