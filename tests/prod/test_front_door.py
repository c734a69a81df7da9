"""The face as a newcomer meets it: one serving path (an option means the same through `serve`, `up` and
`up --config`), -v/-q after the sub-command, the sub-command's own usage for an unknown option, a goodbye and a quick
stop, a line per request, query and message from `up`, and `check` naming every mistake at once."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from sockhop.echo import BUSY
from tests.support import ROOT, require_tool
from tests.test_up import loopback_host

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]


def sockhop(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, **kwargs)  # fmt: skip


def limits_hold(address: tuple[str, int]) -> None:
    """--max-connections 1 and --idle-timeout 1 as a client sees them: a second client is told it is refused, and
    the first is closed after a silent second."""
    with socket.create_connection(address, timeout=10) as first:
        first.sendall(b"x")
        assert first.recv(10) == b"x"
        with socket.create_connection(address, timeout=10) as second:
            assert second.recv(100) == BUSY
        started = time.monotonic()
        assert first.recv(10) == b""  # closed for idleness
        assert 0.5 < time.monotonic() - started < 5


def test_an_option_means_the_same_through_serve_up_and_a_file(sockhop_server, tmp_path):
    limits = ["--idle-timeout", "1", "--max-connections", "1"]
    served = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", *limits])
    limits_hold(served.address("echo"))

    host = loopback_host()
    up = sockhop_server(["up", "--host", host, "--data", str(tmp_path / "data"), "--no-tls", *limits], announce=6)
    limits_hold((host, 7007))
    assert up.stop(signal.SIGINT) == 0

    config = tmp_path / "sockhop.toml"
    config.write_text('idle-timeout = 1\nmax-connections = 1\n[services.echo]\nlisten = ["127.0.0.1:0"]\n')
    from_file = sockhop_server(["up", "--config", str(config)], timeout=60)
    limits_hold(from_file.address("echo"))


def test_verbosity_after_the_sub_command(sockhop_server):
    server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--model", "prefork", "--workers", "1",
                             "-v"])  # fmt: skip
    deadline = time.monotonic() + 10
    while not any("INFO" in line and "worker" in line for line in server.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("INFO" in line and "worker" in line for line in server.lines), server.log()
    quiet = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--model", "prefork", "--workers", "1", "-q"])
    time.sleep(0.5)
    assert quiet.stop(signal.SIGINT) == 0
    assert not any("INFO" in line or "WARNING" in line for line in quiet.lines), quiet.log()


def test_an_unknown_option_gets_the_sub_commands_usage():
    done = sockhop("serve", "web", "--bogus")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: sockhop serve web ")
    assert done.stderr.rstrip().endswith("sockhop serve web: error: unrecognized arguments: --bogus")
    done = sockhop("get", "--bogus", "http://127.0.0.1:1/")
    assert done.returncode == 2  # curl's "bad option use", in one line
    assert done.stderr == "sockhop get: unrecognized arguments: --bogus (see sockhop get --help)\n"


@pytest.mark.parametrize("model", MODELS)
def test_an_idle_server_says_goodbye_at_once(sockhop_server, model):
    """With nothing to finish, a stop waits for none of its 10-second grace (a fifth of a second on a quiet machine;
    the bound allows for the suite's four workers on two cores)."""
    server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0", "--model", model])
    started = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 1.5
    deadline = time.monotonic() + 5
    while server.lines[-1:] != ["sockhop: stopped"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.lines[-1] == "sockhop: stopped", server.log()


def test_up_shows_a_line_per_request_query_and_message_unless_quiet(tmp_path):
    dig = require_tool("dig")
    for quiet in (False, True):
        host = loopback_host()
        command = [sys.executable, "-m", "sockhop", "up", "--host", host, "--data", str(tmp_path / "data"), "--no-tls"]
        proc = subprocess.Popen(command + (["-q"] if quiet else []), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((host, 2525), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            urllib.request.urlopen(f"http://{host}:8080/", timeout=10).read()
            subprocess.run([dig, f"@{host}", "-p", "5353", "+short", "www.sockhop.test"], timeout=20, check=True,
                           capture_output=True)  # fmt: skip
            with smtplib.SMTP(host, 2525, timeout=10) as smtp:
                smtp.sendmail("me@example.org", ["you@sockhop.test"], b"Subject: hi\r\n\r\nhello\r\n")
            time.sleep(1.2)  # the access log goes out within a second
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        if quiet:
            assert out == "", out
        else:
            assert '"GET / HTTP/1.1" 200' in out, out
            assert "udp www.sockhop.test. IN A NOERROR" in out, out
            assert "from=<me@example.org> to=<you@sockhop.test>" in out, out
        assert err.rstrip().endswith("sockhop up: stopped"), err


def test_check_names_every_mistake_at_once(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    (tmp_path / "broken.zone").write_text(
        "$ORIGIN example.test.\n@ 300 IN SOA ns h 1 2 3 4 5\nwww 300 IN A 999.1.1.1\n"
    )
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "afile").write_text("")
    config = tmp_path / "sockhop.toml"
    config.write_text(f"""\
[services.web]
root = "nowhere"
listen = ["127.0.0.1:{port}"]

[services.dns]
zonefiles = ["broken.zone", "missing.zone"]
listen = ["127.0.0.1:0"]

[services.mail]
maildir = "afile/mail"
domain = ["example.test"]
listen = ["127.0.0.1:0"]
listen-tls = ["127.0.0.1:0"]
tls-cert = ["cert.pem"]
tls-key = ["cert.pem"]
""")
    with taken:
        done = sockhop("check", "--config", str(config))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    where = str(config)
    expect = [
        (f"{where}:2: services.web.root: not a directory: nowhere"),
        (f"{where}:3: services.web.listen: "),
        (f"{where}:6: services.dns.zonefiles: "),
        (f"{where}:10: services.mail.maildir: cannot create afile/mail"),
        (f"{where}:14: services.mail.tls-cert: "),
    ]
    for start in expect:
        assert any(line.startswith(start) for line in lines), (start, done.stderr)
    assert sum("zonefiles" in line for line in lines) == 2, done.stderr  # both files, each with its own reason
    assert any("broken.zone:3: " in line and "999.1.1.1" in line for line in lines), done.stderr
    assert any("already in use" in line for line in lines), done.stderr
    assert lines[-1] == f"sockhop: {where}: {len(lines) - 1} mistake(s)"
