"""What every test that runs a real server needs: start sockhop as a subprocess on ephemeral loopback ports, learn
the ports it got, stop it, and make sure nothing is left behind. Real sockets only."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

LISTENING = re.compile(r"^sockhop: (?P<name>\S+) (?P<kind>tcp|udp|tls) (?P<addr>\S+) \(model")
ROOT = Path(__file__).resolve().parent.parent


def cannot_run(message: str) -> NoReturn:
    """A test that cannot run here (a missing tool, root or capability): a skip on a developer's machine, a failure
    in CI, which runs as root with every tool installed -- there nothing may be skipped silently."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_root(why: str = "") -> None:
    """Skip (fail in CI) unless this process is root."""
    if os.geteuid() != 0:
        cannot_run("needs root" + (f" ({why})" if why else ""))


def require_tool(name: str) -> str:
    """The path of a real client or server the test drives, on PATH or in /usr/sbin (where daemons live, and which a
    user's PATH may lack). Missing: a skip on a developer's machine, a failure in CI."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is None:
        cannot_run(f"{name} is not installed (make test installs it)")
    return path


def loopback_dns(command: list[str], folder: Path) -> list[str]:
    """``command`` made to run where its name lookups cannot leave the machine: in a private mount namespace whose
    /etc/resolv.conf names only 127.0.0.1 (nothing answers there, so a lookup of a name not in /etc/hosts fails at
    once with "Temporary failure in name resolution"). No test may send a DNS query off loopback. Needs root and
    unshare (CI has both); the resolv.conf is written into ``folder``."""
    require_root("a private mount namespace")
    unshare = require_tool("unshare")
    conf = folder / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, str(conf), *command]


def own_network(command: list[str]) -> list[str]:
    """``command`` made to run in a network namespace of its own, whose loopback holds nothing else: a command that
    binds fixed ports (the example sockhop.toml's 8080, 5353, 2525, 9100) finds them free whatever this machine
    runs. Needs root, unshare and ip (CI has them)."""
    require_root("a private network namespace")
    unshare, ip = require_tool("unshare"), require_tool("ip")
    return [unshare, "--net", "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", *command]


def end_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this test started: SIGTERM, then SIGKILL if it has not ended within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the test binds it soon after)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(
    port: int,
    proc: subprocess.Popen | None = None,
    what: str = "server",
    timeout: float = 15.0,
    host: str = "127.0.0.1",
) -> None:
    """Wait until ``host:port`` takes TCP connections; the test fails if ``proc`` (the server started for it) ends
    first, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} ended with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {host}:{port}")


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class ServerProcess:
    """A running ``sockhop`` and the addresses it announced, as (host, port) by (name, kind)."""

    proc: subprocess.Popen
    addresses: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def address(self, name: str = "", kind: str = "tcp") -> tuple[str, int]:
        for (n, k), addrs in self.addresses.items():
            if k == kind and (not name or n == name):
                return addrs[0]
        raise KeyError(f"server announced no {name} {kind} address: {self.lines}")

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def said(line: str) -> str:
    """A line of sockhop's standard error as text: under --log-format json, its message with the prefix."""
    if line.startswith("{"):
        try:
            return "sockhop: " + json.loads(line)["message"]
        except (ValueError, KeyError):
            pass
    return line


def start_server(
    args: list[str],
    *,
    announce: int = 1,
    timeout: float = 15.0,
    module: str = "sockhop",
    env=None,
    prefix: list[str] | tuple[str, ...] = (),
    **popen,
) -> ServerProcess:
    """Run ``python -m MODULE ARGS`` (from the repository's root) and wait until it has announced ``announce``
    listening addresses. ``prefix`` is a command that runs it (``strace -f -o LOG``): the process is then that
    command's."""
    popen.setdefault("cwd", ROOT)
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )
    server = ServerProcess(proc)
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                line = line.rstrip("\n")
                server.lines.append(line)
                match = LISTENING.match(said(line))
                if match:
                    key = (match["name"], match["kind"])
                    server.addresses.setdefault(key, []).append(split_address(match["addr"]))
                    if sum(len(v) for v in server.addresses.values()) >= announce:
                        ready.set()
        except ValueError:  # the fixture closed the pipe after the server ended, while this thread still read it
            pass
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"server did not start: {server.log()}")
    if proc.poll() is not None and not server.addresses:
        raise AssertionError(f"server exited with {proc.returncode}: {server.log()}")
    return server


@pytest.fixture
def sockhop_server():
    """Start servers with ``sockhop_server([...args])``; every one is stopped (and reaped) after the test."""
    started: list[ServerProcess] = []

    def start(args: list[str], **kwargs) -> ServerProcess:
        server = start_server(args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def open_up_plan(service_name: str, ctx, plan_index: int = 0) -> tuple[list, object]:
    """What ``sockhop up`` opens for one service's plan, on an ephemeral loopback port (the real ports may be
    taken): the listeners, through the same parser and opener as ``sockhop serve``, and the plan."""
    from sockhop.cli import serve_parsers
    from sockhop.services import BY_NAME
    from sockhop.serving import ArgsOpener

    service = BY_NAME[service_name]
    plan = service.up(ctx)[plan_index]
    args = serve_parsers()[service_name].parse_args([*plan.argv, "--listen", "127.0.0.1:0"])
    return service.open(args, ArgsOpener(args, service_name)), plan


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset). A connection still open when
    ``timeout`` runs out fails the test: every caller counts on the server closing it."""
    chunks = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks)
        except TimeoutError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    received = b"".join(chunks)
    pytest.fail(
        f"the server left the connection open for {timeout} s (after {len(received)} bytes: {received[:200]!r})"
    )
