"""sockhop.toml as a user tries it: `sockhop check` says ok for the example and names every mistake with its
line; `sockhop up --config` runs each service and stops them all on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.dns.zones import write_zone
from tests.prod.helpers import fetch, site_saying
from tests.support import ROOT, own_network, require_tool

BAD = """\
model = "threads"

[services.web]
root = "www"
listen = ["127.0.0.1:99999"]
idle-timeout = -3
colour = "blue"
reuse-port = "yes"

[services.mail]
listen = ["127.0.0.1:2525"]
user = "no-such-user-x"
proxy-protocol = ["lb.example"]

[services.thing]
listen = "x"
"""


def check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", "check", "--config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip


def test_the_example_in_the_repository_is_valid():
    # its ports are fixed: checked where nothing else can hold them (the check binds them, as `up` would)
    command = own_network([sys.executable, "-m", "sockhop", "check", "--config", str(ROOT / "examples/sockhop.toml")])
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sockhop.toml: ok, 3 service(s): web (web), dns (dns), mail (mail)".replace(
        "sockhop.toml", str(ROOT / "examples" / "sockhop.toml")
    )


def test_every_mistake_is_reported_with_its_key_and_line(tmp_path):
    path = tmp_path / "sockhop.toml"
    path.write_text(BAD)
    done = check(path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    expected = [
        (1, "model", "'threads' is not one of"),
        (5, "services.web.listen", "port 99999 is out of range"),
        (6, "services.web.idle-timeout", "must be more than 0"),
        (7, "services.web.colour", "unknown key"),
        (8, "services.web.reuse-port", "wants true or false"),
        (10, "services.mail.maildir", "missing"),
        (10, "services.mail.domain", "missing"),
        (12, "services.mail.user", "no such user"),
        (13, "services.mail.proxy-protocol", "wants an address or network"),
        (15, "services.thing", "which service?"),
    ]
    for line, key, words in expected:
        assert any(text.startswith(f"{path}:{line}: {key}: ") and words in text for text in lines), (line, lines)
    assert lines[-1] == f"sockhop: {path}: {len(expected)} mistake(s)"
    assert "Traceback" not in done.stderr


def test_a_toml_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "sockhop.toml"
    path.write_text('[services.web]\nroot = "www"\nlisten = = 1\n')
    done = check(path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{path}:3: not valid TOML")


def test_up_runs_every_service_and_stops_them_together(sockhop_server, tmp_path):
    site_saying(tmp_path / "www", "from the file")
    write_zone(tmp_path)
    (tmp_path / "sockhop.toml").write_text("""\
model = "eventloop"
idle-timeout = 30

[services.web]
root = "www"
listen = ["127.0.0.1:0"]
no-access-log = true
model = "prefork"
workers = 2

[services.dns]
zonefiles = ["example.com.zone"]
listen = ["127.0.0.1:0"]

[services.echo]
listen = ["127.0.0.1:0"]
""")
    up = sockhop_server(["up", "--config", str(tmp_path / "sockhop.toml")], announce=4, timeout=60)
    assert fetch(*up.address("web")) == (200, b"from the file")
    # the zone's SOA exactly (dig +short prints its errors, ";; communications error ...", on stdout too)
    port = str(up.address("dns", "udp")[1])
    dig = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", port, "+tries=1", "+time=5", "+short",
                          "example.com", "SOA"], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert dig.returncode == 0 and dig.stdout == (
        "ns1.example.com. hostmaster.example.com. 2024010101 7200 900 1209600 300\n"
    ), dig.stdout
    assert "(model prefork, 2 workers)" in up.log()
    children = [int(c) for c in Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()]
    assert len(children) == 3
    assert up.stop() == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_services_stop_when_up_is_killed(sockhop_server, tmp_path):
    """SIGKILL cannot be passed on: each service is told by the kernel (parent-death signal) and stops."""
    (tmp_path / "sockhop.toml").write_text('[services.echo]\nlisten = ["127.0.0.1:0"]\n')
    up = sockhop_server(["up", "--config", str(tmp_path / "sockhop.toml")], timeout=60)
    (child,) = [int(c) for c in Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()]
    up.proc.kill()
    up.proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)
