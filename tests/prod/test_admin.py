"""--admin as a user tries it: /healthz answers, /metrics is Prometheus' text format (parsed here with
prometheus_client's own parser) and counts what the engine served, under one process and under several."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sockhop.echo import BUSY
from tests.dns.zones import write_zone
from tests.prod.helpers import fetch, site_saying
from tests.support import require_tool

N = 20


def scrape(host: str, port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork", "fork"])
def test_metrics_count_what_the_engine_served(sockhop_server, tmp_path, model):
    site = site_saying(tmp_path / "site", "x" * 1000)
    server = sockhop_server(["serve", "web", str(site), "--listen", "127.0.0.1:0", "--no-access-log",
                             "--model", model, "--workers", "2", "--admin", "127.0.0.1:0"], announce=2)  # fmt: skip
    host, port = server.address("web")
    admin = server.address("admin")
    with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/healthz", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    for _ in range(N):
        assert fetch(host, port)[0] == 200
    labels = {"service": "web", "model": model}
    deadline = time.monotonic() + 10
    while True:  # a forked child or a worker may still be closing its last connection
        samples = scrape(*admin)
        if value(samples, "sockhop_connections_open", **labels) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(samples, "sockhop_connections_total", **labels) == N
    assert value(samples, "sockhop_connections_open", **labels) == 0
    assert value(samples, "sockhop_sent_bytes_total", **labels) >= N * 1000
    assert value(samples, "sockhop_received_bytes_total", **labels) >= N * len(b"GET /who.txt HTTP/1.1\r\n")


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_clients_refused_at_the_connection_limit_are_counted(sockhop_server, model):
    server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--model", model, "--max-connections", "1",
                             "--admin", "127.0.0.1:0"], announce=2)  # fmt: skip
    host, port = server.address("echo")
    with socket.create_connection((host, port), timeout=10) as held:
        held.sendall(b"hi")
        assert held.recv(10) == b"hi"  # served: the one connection allowed
        for _ in range(2):
            with socket.create_connection((host, port), timeout=10) as extra:
                assert extra.recv(100) == BUSY  # refused: told why, then closed
        samples = scrape(*server.address("admin"))
    labels = {"service": "echo", "model": model}
    assert value(samples, "sockhop_connections_refused_total", **labels) == 2
    assert value(samples, "sockhop_connections_total", **labels) == 1
    assert value(samples, "sockhop_received_bytes_total", **labels) == 2
    assert value(samples, "sockhop_sent_bytes_total", **labels) == 2  # echo answers plain bytes: counted all the same


@pytest.mark.interop
def test_dns_datagrams_are_counted(sockhop_server, tmp_path):
    dig = require_tool("dig")
    zone = write_zone(tmp_path)
    server = sockhop_server(["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
                            announce=3)  # fmt: skip
    host, port = server.address("dns", "udp")
    for _ in range(3):
        subprocess.run([dig, f"@{host}", "-p", str(port), "+tries=1", "+time=5", "example.com", "SOA"],
                       capture_output=True, timeout=30, check=True)  # fmt: skip
    samples = scrape(*server.address("admin"))
    labels = {"service": "dns", "model": "eventloop"}
    assert value(samples, "sockhop_datagrams_received_total", **labels) == 3
    assert value(samples, "sockhop_datagrams_sent_total", **labels) == 3


def test_unknown_admin_path_is_404(sockhop_server):
    server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], announce=2)
    host, port = server.address("admin")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://{host}:{port}/nope", timeout=10)
    assert caught.value.code == 404


def test_log_format_json_from_a_running_server(sockhop_server, tmp_path):
    site = site_saying(tmp_path / "s", "j")
    server = sockhop_server(["-v", "serve", "web", str(site), "--listen", "127.0.0.1:0", "--model", "prefork",
                             "--workers", "1", "--no-access-log", "--log-format", "json"])  # fmt: skip
    fetch(*server.address("web"))
    server.stop()
    entries = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert entries, server.log()
    assert all({"time", "level", "pid", "logger", "message"} <= set(e) for e in entries)
    assert any("worker" in e["message"] for e in entries)
