"""The proxy in front of real servers: a uvicorn + Starlette application (a streamed upload, a streamed answer,
Server-Sent Events, a WebSocket through the tunnel) and a private nginx (large files both ways with the proxy's
memory bounded; per-host proxies), under the event loop and a blocking model."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, end_process, require_tool, wait_for_port
from tests.web.conftest import curl as web_curl
from tests.web.conftest import start_web, stop_clean
from tests.web.upstreams import pattern

MiB = 1024 * 1024
BIG = 64 * MiB


def _listening_socket() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


@pytest.fixture(scope="module")
def uvicorn_app():
    """uvicorn serving tests/web/asgi_app.py on a socket bound here (handed over with --fd: no port race)."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.web.asgi_app:app", "--fd", str(sock.fileno()),
         "--log-level", "warning", "--ws", "websockets"],
        cwd=ROOT, pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    sock.close()
    try:
        wait_for_port(port, proc, "uvicorn", timeout=20)
        yield port
    finally:
        end_process(proc)


@pytest.fixture(scope="module")
def nginx_upstream(tmp_path_factory):
    """A private nginx (its own config, pid and logs in a temp folder) serving a folder with a 64 MiB file."""
    nginx = require_tool("nginx")
    work = tmp_path_factory.mktemp("nginx")
    www = work / "www"
    www.mkdir()
    (www / "hello.txt").write_text("nginx hello\n")
    (www / "big.bin").write_bytes(pattern(BIG))
    sock = _listening_socket()
    port = sock.getsockname()[1]
    sock.close()  # nginx binds it itself (it takes no descriptor); a race only with another test taking this port
    user = "user root;" if os.geteuid() == 0 else ""
    (work / "nginx.conf").write_text(f"""\
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf")], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, "nginx", timeout=20)
        yield port
    finally:
        end_process(proc)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module", params=["eventloop", "thread"])
def front(request, uvicorn_app, nginx_upstream, tmp_path_factory):
    site = tmp_path_factory.mktemp("front")
    (site / "static.txt").write_text("front\n")
    other = tmp_path_factory.mktemp("other")
    server = start_web(
        site,
        request.param,
        "--proxy", f"/app/=http://127.0.0.1:{uvicorn_app}/",
        "--proxy", f"/files/=http://127.0.0.1:{nginx_upstream}/",
        "--host", f"b.test={other},proxy=/=http://127.0.0.1:{nginx_upstream}/",
        "--max-body", "100M",
        "--idle-timeout", "10",
        "--grace", "2",
    )  # fmt: skip
    host, port = server.address("web")
    server.base = f"http://{host}:{port}"
    server.port = port
    yield server
    stop_clean(server)


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return web_curl(*args, timeout=timeout)  # a minute: the large files


def test_a_starlette_upload_streamed_through(front, tmp_path):
    body = pattern(5 * MiB + 3)
    (tmp_path / "b").write_bytes(body)
    result = curl("-T", str(tmp_path / "b"), front.base + "/app/upload")
    assert json.loads(result.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_streamed_answer_and_server_sent_events(front):
    assert curl(front.base + "/app/stream").stdout == b"".join(f"part {i}\n".encode() for i in range(5))
    result = curl("-N", "-i", front.base + "/app/events")
    assert b"content-type: text/event-stream" in result.stdout.lower()
    assert result.stdout.count(b"data: tick") == 3


def test_a_websocket_through_the_tunnel(front):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{front.port}/app/ws", open_timeout=10) as ws:
        for word in ("hello", "proxy", "x" * 100000):
            ws.send(word)
            assert ws.recv(timeout=10) == word.upper()


def test_nginx_behind_the_proxy_and_a_host_of_its_own(front):
    assert curl(front.base + "/files/hello.txt").stdout == b"nginx hello\n"
    host = f"b.test:{front.port}:127.0.0.1"
    assert curl("--resolve", host, f"http://b.test:{front.port}/hello.txt").stdout == b"nginx hello\n"
    assert curl(front.base + "/static.txt").stdout == b"front\n"


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_64_mib_both_ways_with_the_memory_bounded(front, tmp_path):
    before = _peak_kib(front.proc.pid)
    result = curl("-o", "/dev/null", "-w", "%{size_download}", front.base + "/files/big.bin")
    assert result.stdout == str(BIG).encode(), result
    up = tmp_path / "up.bin"
    up.write_bytes(pattern(BIG))
    result = curl("--data-binary", f"@{up}", front.base + "/app/upload", timeout=120)
    assert json.loads(result.stdout)["size"] == BIG
    grown = _peak_kib(front.proc.pid) - before
    assert grown < 24 * 1024, f"the proxy's peak memory grew by {grown} KiB for 64 MiB each way"
