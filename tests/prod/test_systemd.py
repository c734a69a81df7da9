"""Under systemd as an operator runs it: the shipped units verify with the path `make install-system` installs to,
and a service is Type=notify -- READY=1 once it serves, MAINPID following a SIGUSR2 restart, a pid file too."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.engine.clients import echo_once
from tests.support import ROOT, require_tool

UNITS = sorted((ROOT / "contrib" / "systemd").glob("sockhop-*"))


def test_the_units_verify_where_make_install_system_puts_sockhop(tmp_path):
    """`systemd-analyze verify` against a root holding what `make install-system` installs (and the system's own
    units the files refer to): every unit, every command they name."""
    analyze = require_tool("systemd-analyze")
    root = tmp_path / "root"
    # --no-deps: what is checked is where the command lands, not sockhop's dependencies (the suite has them)
    done = subprocess.run(["make", "-C", str(ROOT), "install-system", f"DESTDIR={root}", "PIP_ARGS=--no-deps"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.readlink(root / "usr/local/bin/sockhop") == "/opt/sockhop/bin/sockhop"
    assert (root / "opt/sockhop/bin/sockhop").is_file()
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin" / "kill")  # ExecReload's
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    assert len(UNITS) == 6
    for unit in UNITS:
        shutil.copy(unit, units / unit.name)
    for unit in UNITS:
        done = subprocess.run([analyze, "verify", "--man=no", f"--root={root}", str(units / unit.name)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and not done.stderr.strip(), f"{unit.name}: {done.stderr}"
        if unit.suffix == ".service":
            text = unit.read_text()
            assert "ExecStart=/usr/local/bin/sockhop " in text
            assert "Type=notify" in text and "NotifyAccess=all" in text


def notified(sock: socket.socket, timeout: float = 20.0) -> dict[str, str]:
    sock.settimeout(timeout)
    message = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in message.splitlines())


def test_notify_and_pid_file_follow_a_restart(sockhop_server, tmp_path):
    """What systemd's Type=notify sees: READY=1 with the serving master's pid, and after SIGUSR2 the new master's
    (the old one drains and exits); --pid-file says the same."""
    path = tmp_path / "notify"
    pid_file = tmp_path / "sockhop.pid"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        env = {**os.environ, "NOTIFY_SOCKET": str(path)}
        server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--pid-file", str(pid_file)], env=env)
        first = notified(listener)
        assert first == {"READY": "1", "MAINPID": str(server.pid)}
        assert pid_file.read_text() == f"{server.pid}\n"
        address = server.address("echo")
        server.proc.send_signal(signal.SIGUSR2)
        second = notified(listener)
        new = int(second["MAINPID"])
        assert second["READY"] == "1" and new != server.pid
        assert pid_file.read_text() == f"{new}\n"
        assert echo_once(address, b"after\n") == b"after\n"
        assert server.proc.wait(timeout=20) == 0  # the old master drained and left
        os.kill(new, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{new}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{new}").exists() or "zombie" in Path(f"/proc/{new}/status").read_text().lower()
