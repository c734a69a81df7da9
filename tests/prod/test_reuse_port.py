"""--reuse-port: two independent sockhop processes listen on one port and the kernel spreads clients over both."""

from __future__ import annotations

import pytest

from tests.prod.helpers import fetch, site_saying

TRIES = 200


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_two_processes_on_one_port_both_answer(sockhop_server, tmp_path, model):
    a = sockhop_server(["serve", "web", str(site_saying(tmp_path / "a", "A")), "--listen", "127.0.0.1:0",
                        "--reuse-port", "--no-access-log", "--model", model, "--workers", "2"])  # fmt: skip
    host, port = a.address("web")
    b = sockhop_server(["serve", "web", str(site_saying(tmp_path / "b", "B")), "--listen", f"{host}:{port}",
                        "--reuse-port", "--no-access-log", "--model", model, "--workers", "2"])  # fmt: skip
    assert b.address("web") == (host, port)
    seen: dict[bytes, int] = {}
    for _ in range(TRIES):
        status, body = fetch(host, port)
        assert status == 200
        seen[body] = seen.get(body, 0) + 1
        if len(seen) == 2:
            break
    assert set(seen) == {b"A", b"B"}, seen


def test_without_reuse_port_the_second_is_refused_in_one_line(sockhop_server, tmp_path):
    import subprocess
    import sys

    a = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--reuse-port"])
    host, port = a.address("echo")
    done = subprocess.run([sys.executable, "-m", "sockhop", "serve", "echo", "--listen", f"{host}:{port}"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert "already in use" in done.stderr and "Traceback" not in done.stderr
