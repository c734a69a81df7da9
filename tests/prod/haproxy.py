"""A real HAProxy (the Debian package) in front of sockhop instances, for the tests: TCP mode, one frontend per
service on an ephemeral loopback port, health checks every 200 ms."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import end_process, free_port, require_tool, wait_for_port


def config(backends: dict[str, list[tuple[str, int]]], fronts: dict[str, tuple[str, int]], server_options: str) -> str:
    lines = [
        "global",
        "    maxconn 512",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    retries 3",
        "    option redispatch",
    ]
    for name, servers in backends.items():
        host, port = fronts[name]
        lines += [f"frontend {name}_in", f"    bind {host}:{port}", f"    default_backend {name}"]
        lines += [f"backend {name}", "    balance roundrobin", "    default-server inter 200ms fall 1 rise 2"]
        for i, (shost, sport) in enumerate(servers):
            lines.append(f"    server {name}{i} {shost}:{sport} check {server_options}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def haproxy(
    folder: Path, backends: dict[str, list[tuple[str, int]]], server_options: str = ""
) -> Iterator[dict[str, tuple[str, int]]]:
    """Run HAProxy over ``backends`` (name -> servers); yields name -> the frontend's (host, port)."""
    binary = require_tool("haproxy")
    fronts = {name: ("127.0.0.1", free_port()) for name in backends}
    cfg = folder / "haproxy.cfg"
    cfg.write_text(config(backends, fronts, server_options))
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for host, port in fronts.values():
            wait_for_port(port, proc, "haproxy", timeout=10, host=host)
        time.sleep(0.6)  # the first health checks (rise 2 at 200 ms) pass before traffic
        yield fronts
    finally:
        end_process(proc, 10)
        if proc.stderr:
            proc.stderr.close()
