"""The real DNS servers the tests run beside sockhop: NSD and BIND's named, each a private instance on a free port of
127.0.0.1 with its configuration, state and log in one folder, serving example.com as the test says."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.support import end_process, require_tool


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port")


def start_nsd(folder: Path, zone: str, secret: str | None = None) -> tuple[subprocess.Popen, int]:
    """NSD serving example.com, ``zone`` its lines in nsd.conf (the zone file, transfers, NOTIFY), with TSIG key upd
    (hmac-sha256) when ``secret`` is given; returned once it answers, with its port."""
    nsd = require_tool("nsd")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key = f'key:\n    name: upd\n    algorithm: hmac-sha256\n    secret: "{secret}"\n' if secret else ""
    conf = folder / "nsd.conf"
    conf.write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    username: ""
    chroot: ""
    zonesdir: "{folder}"
    pidfile: "{folder}/nsd.pid"
    database: ""
    zonelistfile: "{folder}/zone.list"
    xfrdfile: "{folder}/xfrd.state"
    xfrdir: "{folder}"
    logfile: "{folder}/nsd.log"
    server-count: 1
    rrl-ratelimit: 0
    verbosity: 2
remote-control:
    control-enable: no
{key}zone:
    name: example.com
{zone}""")
    proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answering(proc, port, folder / "nsd.log")
    return proc, port


def start_named(folder: Path, zone: str, secret: str, notify: str) -> tuple[subprocess.Popen, int, Path]:
    """BIND's named serving example.com, ``zone`` its statements in named.conf, with TSIG key upd (hmac-sha256) and
    ``notify`` its NOTIFY option; returned once it answers, with its port and its log."""
    named = require_tool("named")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "named.conf"
    conf.write_text(f"""options {{
  directory "{folder}";
  pid-file "{folder}/named.pid";
  session-keyfile "{folder}/session.key";
  managed-keys-directory "{folder}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify {notify};
}};
key "upd" {{ algorithm hmac-sha256; secret "{secret}"; }};
controls {{ }};
zone "example.com" {{
{zone}}};
""")
    log = folder / "named.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([named, "-g", "-n", "1", "-c", str(conf)], stdout=out, stderr=out)
    answering(proc, port, log)
    return proc, port, log


def answering(proc: subprocess.Popen, port: int, log: Path) -> None:
    """Wait until the server just started answers on ``port`` (any answer: a secondary may not hold the zone yet);
    ended, and the test failed with its log, if it does not within 20 seconds."""
    deadline = time.monotonic() + 20
    while True:
        try:
            dns.query.udp(dns.message.make_query("example.com", "SOA"), "127.0.0.1", port=port, timeout=0.5)
            return
        except (dns.exception.Timeout, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                end_process(proc, 5)
                text = log.read_text() if log.exists() else ""
                raise AssertionError(f"{Path(proc.args[0]).name} did not start: {text}") from None
