"""The issue's flow: with ``sockhop up`` running, ``sockhop send --dns ...:5353 --to you@sockhop.test`` asks the
built-in zone for the MX (mail.sockhop.test) and the port (its _smtp._tcp SRV record) and delivers to up's mail."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time

from tests.mail.support import delivered


def test_send_through_up_finds_mx_and_port_by_dns(sockhop_server, tmp_path):
    # `up` uses fixed ports: a loopback address of its own keeps out of the way of anything else
    HOST = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"  # noqa: N806
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((HOST, 5353 if kind == socket.SOCK_DGRAM else 2525))
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", HOST, "--data", str(data)], announce=2)
    deadline = time.monotonic() + 15  # up announces every listener at once, after all are bound
    while "mail tcp" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"try: echo hello | sockhop send --dns {HOST}:5353 --to you@sockhop.test" in server.log()
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "send", "--dns", f"{HOST}:5353", "--to", "you@sockhop.test",
         "--subject", "through up"],
        input="mail and DNS on one machine\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"you@sockhop.test: delivered via {HOST}:2525: 250 ")
    [msg] = delivered(data / "mail", "you")
    assert msg["Subject"] == "through up" and msg.get_content() == "mail and DNS on one machine\n"
