"""A real `sockhop serve web` per model, shared by the tests of a module, over a small site in a temp folder; and
what the proxy tests share: their upstreams, a clean stop, curl."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import ServerProcess, read_until_closed, require_tool, start_server
from tests.web.upstreams import Upstreams

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
BIG = bytes(range(256)) * 4096  # 1 MiB


def make_site(root: Path) -> Path:
    (root / "hello.txt").write_text("hello, world\n")
    (root / "index.html").write_text("<!doctype html><title>home</title><h1>home</h1>\n")
    (root / "big.bin").write_bytes(BIG)
    (root / "docs").mkdir()
    (root / "docs" / "readme.md").write_text("# docs\n")
    (root / "app.js").write_text("console.log('plain');\n" * 50)
    (root / "app.js.gz").write_bytes(gzip.compress((root / "app.js").read_bytes()))
    (root / ".env").write_text("SECRET=1\n")
    (root / "sp ace é.txt").write_text("unicode name\n")
    return root


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    return make_site(tmp_path_factory.mktemp("site"))


class WebServer:
    def __init__(self, server: ServerProcess, model: str) -> None:
        self.server = server
        self.model = model
        self.host, self.port = server.address("web")

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def exchange(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes, half-close, read until the server closes."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            return read_until_closed(sock, timeout)


def start_web(root: Path, model: str, *extra: str) -> ServerProcess:
    args = ["serve", "web", str(root), "--model", model]
    if "--listen" not in extra:
        args += ["--listen", "127.0.0.1:0"]
    if "--access-log" not in extra:
        args.append("--no-access-log")
    if model in ("pool", "prefork"):
        args += ["--workers", "2"]
    return start_server([*args, *extra], env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module", params=MODELS)
def web(request, site):
    server = start_web(site, request.param, "--idle-timeout", "5", "--grace", "2")
    try:
        yield WebServer(server, request.param)
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    """The proxy tests' upstreams (tests/web/upstreams.py), shared by the tests of a module."""
    ups = Upstreams(tmp_path_factory.mktemp("upstreams"))
    yield ups
    ups.close()


def stop_clean(server: ServerProcess) -> None:
    """Stop a module's server, and fail unless it ended with status 0 and no traceback in its log."""
    status = server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert status == 0, log


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("curl"), "-sS", *args], capture_output=True, timeout=timeout, check=False)
