#!/usr/bin/env python3
"""HTTP static files: wrk against every sockhop model and the usual servers, in one run; a markdown table and a PNG.

The server under test is pinned to core 0, wrk to core 1. For each server:

* ``ka``   -- a 1 KiB file, keep-alive, 50 connections (requests/s);
* ``cpr``  -- the same file with ``Connection: close``: a new connection per request (requests/s);
* ``big``  -- a 1 MiB file, keep-alive, 10 connections (MiB/s; sendfile where the server has it);
* ``idle`` -- keep-alive connections that made one request and then sit idle (10,000 by default; the fork and
  thread models and the thread-per-connection peers at a smaller count), and the server's memory per connection
  (PSS of its process tree, so forked children's shared pages count once).

Every figure is also given as a ratio to nginx measured in the same run: absolute numbers move with the machine and
the day, ratios much less. The server's CPU time per keep-alive request is given too: it moves less than a rate when
something else shares the machine. sockhop's eventloop runs three times: with the access log off and on, and with
ten virtual hosts configured (``--host``, wrk asking for the last one named), against one root.

Peers are installed here, never vendored: nginx, lighttpd and Apache from apt (when missing), and uvicorn with
Starlette's StaticFiles, aiohttp and twisted web into a venv under bench/.build. Their configurations are those of
the issue's reference measurements (one nginx worker with sendfile, Apache's event MPM with one child, ...).

    make bench                                        # everything (after the echo benchmark)
    python bench/web.py --seconds 1 --idle 1000       # a short look
    python bench/web.py --quick --out /tmp/bench      # a smoke run: the script works (figures mean nothing)
    python bench/web.py --only nginx eventloop eventloop+log --seconds 5
    python bench/web.py --only eventloop eventloop+10hosts         # ten virtual hosts against one root
    python bench/web.py --only nginx+gzip eventloop+gzip           # gzip on the fly against nginx's gzip on
    python bench/web.py --only h2-eventloop h2-nginx h2-hypercorn    # the HTTP/2 section alone (web_h2.py)

The HTTP/2 section (bench/web_h2.py) runs h2load against sockhop, nginx and Hypercorn: see its docstring.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import web_h2
from common import (
    BUILD,
    CLIENT_CORE,
    SERVER_CORE,
    cpu_seconds,
    fmt,
    idle_memory,
    micros_per,
    need_two_cores,
    parse,
    parser_for,
    raise_nofile,
    ratio,
    run_pinned,
    sbin,
    sockets_held,
    start_server,
    stop,
    wait_quiet,
    write_report,
    wrk_seconds,
)

PEER_VENV = BUILD / "web-peers"
PORT = 18080

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
SOCKHOP = [*MODELS, "eventloop+log", "eventloop+10hosts", "eventloop+gzip"]
#: Compression on the fly: a 100 KiB text file asked for with Accept-Encoding: gzip, at the same gzip level.
GZIP = ["nginx+gzip", "eventloop+gzip"]
GZIP_LEVEL = 6
#: The virtual-host figure: ten hosts configured, the one wrk asks for (Host: 127.0.0.1:PORT) the last named.
VHOSTS = [f"host{i}.test" for i in range(9)] + ["127.0.0.1"]
PEERS = ["nginx", "nginx+log", "lighttpd", "apache-event", "threading-http", "uvicorn", "aiohttp", "twisted"]
CONFIGS = ("ka", "cpr", "big")
CPU_KEYS = {"ka": "us", "cpr": "us_cpr"}  # the figures whose server CPU per request is reported
#: Servers that spend a process or a thread per connection hold fewer idle ones; the per-connection figure compares.
IDLE_CAP = {"fork": 1000, "thread": 2000, "threading-http": 2000}
#: Servers that cannot hold idle keep-alive connections at all in this setup.
NO_IDLE = {"iterative"}  # one client at a time; the rest wait in the backlog
APT = {"nginx": "nginx", "lighttpd": "lighttpd", "apache2": "apache2", "wrk": "wrk", "h2load": "nghttp2-client"}
PYPI = ["uvicorn[standard]", "starlette", "aiohttp", "twisted", "uvloop", "httptools", "hypercorn"]

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# -- installing the peers -------------------------------------------------------------------------------------------
def ensure_apt() -> set[str]:
    """Install the Debian peers that are missing; return the commands that are there afterwards."""
    missing = [pkg for cmd, pkg in APT.items() if sbin(cmd) is None]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"bench: apt-get install {' '.join(missing)}", file=sys.stderr)
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], env=env, check=False,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return {cmd for cmd in APT if sbin(cmd)}


def ensure_pypi() -> Path | None:
    """The venv with the Python peers (created and filled once); None if it cannot be made."""
    python = PEER_VENV / "bin" / "python"
    check = [str(python), "-c", "import uvicorn, starlette, aiohttp, twisted, uvloop, httptools, hypercorn"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    BUILD.mkdir(exist_ok=True)
    print(f"bench: pip install {' '.join(PYPI)} into {PEER_VENV}", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PYPI], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"bench: the Python peers are not available: {exc}", file=sys.stderr)
        return None
    return python


# -- the site and the peers' configurations -------------------------------------------------------------------------
def make_site(work: Path) -> Path:
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"a" * 1024)
    (www / "big.bin").write_bytes(os.urandom(1024 * 1024))
    lines = (f"{i:06d} GET /index.html HTTP/1.1 200 1024 {os.urandom(6).hex()} Mozilla/5.0\n" for i in range(2000))
    (www / "text.txt").write_bytes("".join(lines).encode()[: 100 * 1024])  # 100 KiB of log-like text
    for path in (work, www):
        path.chmod(0o755)
    for path in www.iterdir():
        path.chmod(0o644)
    return www


PY_THREADING = """\
import sys, functools
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
class H(SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
class S(ThreadingHTTPServer):
    request_queue_size = 1024   # the standard library's default is 5
S(('127.0.0.1', int(sys.argv[1])), functools.partial(H, directory=sys.argv[2])).serve_forever()
"""
UVICORN_APP = """\
import os
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
app = Starlette(routes=[Mount('/', app=StaticFiles(directory=os.environ['ROOT']))])
"""
AIOHTTP = """\
import sys
from aiohttp import web
app = web.Application()
app.router.add_static('/', sys.argv[2])
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
"""


def nginx_conf(work: Path, www: Path, port: int, log: bool, gzip: bool = False) -> Path:
    conf = work / "nginx.conf"
    access = f"access_log {work}/nginx-access.log;" if log else "access_log off;"
    if gzip:
        access += f" gzip on; gzip_comp_level {GZIP_LEVEL}; gzip_min_length 256; gzip_types text/plain;"
    conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  {access}
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
""")
    return conf


def lighttpd_conf(work: Path, www: Path, port: int) -> Path:
    conf = work / "lighttpd.conf"
    conf.write_text(f"""\
server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{work}/lighttpd-error.log"
server.max-keep-alive-requests = 10000000
server.max-keep-alive-idle = 300
server.max-fds = 65536
server.max-connections = 16384
mimetype.assign = (".html" => "text/html", ".bin" => "application/octet-stream")
""")
    return conf


def apache_conf(work: Path, www: Path, port: int) -> Path:
    conf = work / "apache.conf"
    user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""\
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MinSpareThreads 1
MaxSpareThreads 64
MaxRequestWorkers 64
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
ServerRoot {work}
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {work}/apache.pid
DefaultRuntimeDir {work}
Mutex file:{work} default
ErrorLog {work}/apache-error.log
LogLevel warn
{user}TypesConfig /etc/mime.types
DocumentRoot {www}
<Directory />
  Require all granted
  AllowOverride None
</Directory>
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 300
EnableSendfile On
EnableMMAP On
""")
    return conf


def server_command(name: str, work: Path, www: Path, port: int, peer_python: Path | None) -> list[str] | None:
    """The command line that runs ``name`` in the foreground on ``port``; None if it is not installed."""
    if name in SOCKHOP:
        model = name.split("+")[0]
        workers = {"pool": "64", "prefork": "1"}.get(model, "1")  # pool: a thread per client of the 50
        log = ["--access-log", str(work / "sockhop-access.log")] if name.endswith("+log") else ["--no-access-log"]
        if name.endswith("+10hosts"):
            log += [arg for host in VHOSTS for arg in ("--host", f"{host}={www}")]
        if name.endswith("+gzip"):
            log += ["--compress", "--compress-level", str(GZIP_LEVEL)]
        return [
            sys.executable, "-m", "sockhop", "serve", "web", str(www), "--model", model,
            "--listen", f"127.0.0.1:{port}", "--workers", workers, "--max-connections", "20000",
            "--idle-timeout", "300", "--max-requests", "100000000", "--grace", "1", *log,
        ]  # fmt: skip
    if name.startswith("nginx"):
        conf = nginx_conf(work, www, port, "+log" in name, "+gzip" in name)
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)]
    if name == "lighttpd":
        return [shutil.which("lighttpd") or "/usr/sbin/lighttpd", "-D", "-f", str(lighttpd_conf(work, www, port))]
    if name == "apache-event":
        apache = shutil.which("apache2") or "/usr/sbin/apache2"
        return [apache, "-f", str(apache_conf(work, www, port)), "-DFOREGROUND"]
    if name == "threading-http":
        script = work / "threading_http.py"
        script.write_text(PY_THREADING)
        return [sys.executable, str(script), str(port), str(www)]
    if peer_python is None:
        return None
    if name == "uvicorn":
        (work / "uv_app.py").write_text(UVICORN_APP)
        return [
            str(peer_python), "-m", "uvicorn", "--app-dir", str(work), "uv_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--timeout-keep-alive", "300",
        ]  # fmt: skip
    if name == "aiohttp":
        script = work / "aio.py"
        script.write_text(AIOHTTP)
        return [str(peer_python), str(script), str(port), str(www)]
    if name == "twisted":
        twistd = peer_python.parent / "twistd"
        return [str(twistd), "-n", "--pidfile=", "-l", str(work / "twistd.log"), "web", "--path", str(www),
                "--listen", f"tcp:{port}:interface=127.0.0.1"]  # fmt: skip
    raise ValueError(name)


# -- running ----------------------------------------------------------------------------------------------------------
def answers_http(port: int) -> bool:
    """A probe: the server answers a GET with an HTTP status line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(REQUEST)
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def start(cmd: list[str], work: Path, www: Path, port: int) -> subprocess.Popen:
    return start_server(cmd, lambda: answers_http(port), cwd=work, logs=[work / "server.out"],
                        env={**os.environ, "ROOT": str(www)})  # fmt: skip


def wrk(config: str, port: int, seconds: float) -> tuple[float, str]:
    """One wrk run: (requests/s, or MiB/s for ``big``; a note of errors)."""
    url, conns, extra = f"http://127.0.0.1:{port}/index.html", 50, []
    if config == "cpr":
        extra = ["-H", "Connection: close"]
    elif config == "big":
        url, conns = f"http://127.0.0.1:{port}/big.bin", 10
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{wrk_seconds(seconds)}s", *extra, url]
    try:
        out = run_pinned(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return 0.0, "wrk hung"
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    notes = "; ".join(line.strip() for line in out.splitlines() if "errors" in line or "Non-2xx" in line)
    if config == "big":
        if not transfer:
            return 0.0, notes or "no result"
        scale = {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
        return float(transfer.group(1)) * scale, notes
    return (float(rate.group(1)) if rate else 0.0), notes


def idle(proc: subprocess.Popen, port: int, count: int, timeout: float = 120) -> tuple[int, float]:
    """Open ``count`` keep-alive connections that each make one request and then sit idle; return how many the
    server holds and its memory per connection in KiB."""

    def open_connections(socks: list[socket.socket], held) -> int:
        sel = selectors.DefaultSelector()
        state: dict[socket.socket, bytearray] = {}
        done = 0
        try:
            deadline = time.monotonic() + timeout
            progress = time.monotonic()  # servers with a connection cap never answer the rest: give up 10 s after
            while (len(socks) < count or state) and time.monotonic() < min(deadline, progress + 10):
                while len(socks) < count and len(state) < 500:  # a few hundred in flight: the backlog never fills
                    sock = socket.socket()
                    sock.setblocking(False)
                    try:
                        sock.connect(("127.0.0.1", port))
                    except BlockingIOError:
                        pass
                    except OSError:
                        sock.close()
                        break
                    socks.append(sock)
                    state[sock] = bytearray()
                    sel.register(sock, selectors.EVENT_WRITE)
                for key, events in sel.select(timeout=1):
                    sock = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        try:
                            sock.send(REQUEST)
                        except OSError:
                            sel.unregister(sock)
                            state.pop(sock, None)
                            continue
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    buf = state[sock]
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length:\s*(\d+)", buf[:end]) if end >= 0 else None
                    if not data or (length and len(buf) >= end + 4 + int(length.group(1))):
                        sel.unregister(sock)
                        state.pop(sock)
                        done += bool(data)
                        progress = time.monotonic()
        finally:
            sel.close()
        return done

    return idle_memory(proc.pid, count, open_connections, pause=1.0)


def measure(name: str, command, work: Path, www: Path, port: int, seconds: float, idle_count: int) -> dict:
    """Every figure of one server; ``command(port)`` is its command line."""
    row: dict = {"server": name, "notes": []}
    proc = start(command(port), work, www, port)
    fresh = sockets_held(proc.pid)
    try:
        wrk("ka", port, min(1.0, seconds))  # warm up: caches, the first accept, the JIT-less interpreters' imports
        for config in CONFIGS:
            wait_quiet(proc.pid, fresh)
            cpu = cpu_seconds(proc.pid)
            value, note = wrk(config, port, seconds)
            row[config] = value
            if config in CPU_KEYS:
                # Server CPU per request: steadier than rates when something else shares the machine, and the
                # truer figure for new connections, where wrk's own core is the cap for most servers.
                row[CPU_KEYS[config]] = micros_per(cpu_seconds(proc.pid) - cpu, value * seconds)
            if note:
                row["notes"].append(f"{config}: {note}")
    finally:
        stop(proc)
    for key in CPU_KEYS.values():
        row.setdefault(key, float("nan"))
    row["idle"], row["kib"] = 0, float("nan")
    if name not in NO_IDLE and idle_count > 0:
        port += 1  # a fresh server (and a port with no TIME_WAIT behind it) for the memory figure
        proc = start(command(port), work, www, port)
        try:
            row["idle"], row["kib"] = idle(proc, port, min(idle_count, IDLE_CAP.get(name, idle_count)))
        finally:
            stop(proc)
    return row


def gzipped(port: int) -> bool:
    """A probe: the server answers text.txt gzipped when asked."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /text.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n")
        return b"content-encoding: gzip" in sock.recv(4096).lower()


def measure_gzip(name: str, command, work: Path, www: Path, port: int, seconds: float) -> dict:
    """Requests/s and server CPU per request for the 100 KiB text file, gzipped, keep-alive, 50 connections."""
    row: dict = {"server": name, "notes": []}
    proc = start(command(port), work, www, port)
    try:
        if not gzipped(port):
            return {"server": name, "error": "did not answer gzipped"}
        cmd = ["wrk", "-t1", "-c50", f"-d{wrk_seconds(min(1.0, seconds))}s", "-H", "Accept-Encoding: gzip"]
        url = f"http://127.0.0.1:{port}/text.txt"
        run_pinned([*cmd, url], capture_output=True, text=True, timeout=seconds + 60)  # warm up
        cpu = cpu_seconds(proc.pid)
        cmd[3] = f"-d{wrk_seconds(seconds)}s"
        out = run_pinned([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        row["gz"] = float(rate.group(1)) if rate else 0.0
        row["us"] = micros_per(cpu_seconds(proc.pid) - cpu, row["gz"] * seconds)
        row["notes"] = [line.strip() for line in out.splitlines() if "errors" in line or "Non-2xx" in line]
    finally:
        stop(proc)
    return row


def gzip_table(rows: list[dict], seconds: float) -> str:
    base = next((r for r in rows if r["server"] == "nginx+gzip" and "error" not in r), None)
    lines = [
        "| server | 100 KiB text, gzip, keep-alive req/s | ÷ nginx gzip on | CPU µs per request | notes |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['server']} | - | - | - | {r['error']} |")
            continue
        times = ratio(r["gz"], base["gz"]) if base else "-"
        lines.append(f"| {r['server']} | {fmt(r['gz'])} | {times} | {fmt(r['us'], 1)} | {'; '.join(r['notes'])} |")
    lines.append("")
    lines.append(
        f"gzip level {GZIP_LEVEL} on both; nginx compresses every answer (gzip on, no cache), sockhop's --compress "
        f"compresses a file version once and keeps it. {seconds:g} s per figure, 50 connections, target ≥ 0.7x."
    )
    return "\n".join(lines)


# -- reporting ------------------------------------------------------------------------------------------------------
def table(rows: list[dict], seconds: float) -> str:
    nginx = next((r for r in rows if r["server"] == "nginx"), None)
    base = {c: nginx[c] for c in CONFIGS} if nginx else {}
    lines = [
        "| server | 1 KiB keep-alive req/s | ÷ nginx | 1 KiB new conn req/s | ÷ nginx | 1 MiB MiB/s | ÷ nginx "
        "| CPU µs per request (keep-alive) | CPU µs per request (new conn) | idle held | KiB per idle conn | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['server']} | - | - | - | - | - | - | - | - | - | - | {r['error']} |")
            continue
        lines.append(
            f"| {r['server']} | {fmt(r['ka'])} | {ratio(r['ka'], base.get('ka'))} | {fmt(r['cpr'])} "
            f"| {ratio(r['cpr'], base.get('cpr'))} | {fmt(r['big'])} | {ratio(r['big'], base.get('big'))} "
            f"| {fmt(r['us'], 1)} | {fmt(r['us_cpr'], 1)} "
            f"| {fmt(r['idle']) if r['idle'] else '-'} | {fmt(r['kib'], 2)} "
            f"| {'; '.join(r['notes'])} |"
        )
    by = {r["server"]: r for r in rows if "error" not in r}
    lines.append("")
    if "eventloop" in by and "eventloop+log" in by and by["eventloop"]["ka"]:
        on, off = by["eventloop+log"], by["eventloop"]
        lines.append(
            f"- eventloop, access log on / off (1 KiB keep-alive): **{on['ka'] / off['ka']:.2f}x** "
            f"(by server CPU per request: {ratio(off['us'], on['us'])}; target ≥ 0.85x)"
        )
    if "eventloop" in by and nginx:
        el = by["eventloop"]
        for config, label, target in (("ka", "1 KiB keep-alive", 0.7), ("cpr", "new connection", 0.9),
                                      ("big", "1 MiB", 0.9)):  # fmt: skip
            key = CPU_KEYS.get(config)
            cpu = f" (by server CPU per request: {ratio(nginx[key], el[key])})" if key else ""
            lines.append(
                f"- eventloop / nginx, {label}: **{ratio(el[config], base[config])}**{cpu} (target ≥ {target}x)"
            )
    if "eventloop" in by and "eventloop+10hosts" in by and by["eventloop"]["ka"]:
        one, ten = by["eventloop"], by["eventloop+10hosts"]
        figures = ", ".join(
            f"{label} **{ratio(ten[config], one[config])}**"
            for config, label in (("ka", "1 KiB keep-alive"), ("cpr", "new connection"), ("big", "1 MiB"))
        )
        lines.append(f"- eventloop, ten virtual hosts / one root: {figures} (target ≥ 0.97x)")
    if "eventloop" in by and "twisted" in by and by["twisted"]["ka"]:
        times = ratio(by["eventloop"]["ka"], by["twisted"]["ka"])
        lines.append(f"- eventloop / twisted web, 1 KiB keep-alive: **{times}** (target ≥ 8x)")
    if "eventloop" in by and by["eventloop"]["idle"]:
        el = by["eventloop"]
        lines.append(
            f"- eventloop: {el['idle']:,} idle keep-alive connections at {el['kib']:.2f} KiB each (target ≤ 4 KiB)"
        )
    lines.append("")
    lines.append(
        f"Server pinned to core {SERVER_CORE}, wrk (-t1) to core {CLIENT_CORE}; {seconds:g} s per figure after a "
        "warm-up; 50 connections for the 1 KiB file, 10 for the 1 MiB one. pool runs 64 threads, prefork 1 worker, "
        "nginx 1 worker with sendfile, Apache the event MPM with one child of 64 threads. iterative serves one "
        "connection at a time (the others wait: wrk's timeouts). Idle memory is PSS of the server's process tree. "
        "With a new connection per request, wrk's own core is the cap for most servers (compare iterative): the "
        "server CPU per request says more there."
    )
    return "\n".join(lines)


def plot(plt: Any, rows: list[dict]) -> Any:
    """The report's figure, drawn with pyplot ``plt`` (None: nothing to draw)."""
    rows = [r for r in rows if "error" not in r]
    nginx = next((r for r in rows if r["server"] == "nginx"), None)
    names = [r["server"] for r in rows]
    panels = [("ka", "1 KiB keep-alive, requests/s"), ("cpr", "1 KiB, new connection per request, requests/s"),
              ("big", "1 MiB keep-alive, MiB/s"), ("kib", "KiB of server memory per idle connection")]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        values = [r[key] if r[key] == r[key] else 0 for r in rows]
        colours = ["tab:blue" if n in SOCKHOP else "tab:gray" for n in names]
        bars = ax.bar(names, values, color=colours)
        if nginx and key != "kib" and nginx[key]:
            for bar, value in zip(bars, values, strict=True):
                ax.annotate(f"{value / nginx[key]:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)  # fmt: skip
        if key == "kib":
            ax.set_yscale("log")  # a forked process per connection is three orders above an event loop
        ax.set_title(title + (" (labels: ÷ nginx)" if key != "kib" else ", log scale"))
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    fig.suptitle("sockhop web (blue) and peers (grey), same run")
    return fig


def main() -> int:
    parser = parser_for(__doc__, SOCKHOP + PEERS + GZIP + web_h2.SERVERS, "measure only these (nginx is the base)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per figure, whole seconds (default 10)")
    parser.add_argument("--idle", type=int, default=10000, help="idle keep-alive connections to hold (default 10000)")
    args = parse(parser, quick={"seconds": 1.0, "idle": 50})
    args.seconds = wrk_seconds(args.seconds)  # what wrk will run, so that the table says it
    need_two_cores("wrk")
    raise_nofile()
    have = ensure_apt()
    if "wrk" not in have:
        sys.exit("bench: wrk is needed: apt-get install wrk")
    names = args.only or [n for n in SOCKHOP if n not in GZIP] + PEERS + GZIP + web_h2.SERVERS
    peer_python = ensure_pypi() if {"uvicorn", "aiohttp", "twisted", "h2-hypercorn"} & set(names) else None
    rows: list[dict] = []
    h2_rows: list[dict] = []
    gzip_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sockhop-web-bench-") as tmp:
        work = Path(tmp)
        www = make_site(work)
        (work / "uv_app.py").write_text(UVICORN_APP)  # Hypercorn serves the same app as uvicorn
        for i, name in enumerate(names):
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            port = PORT + 10 * i
            if name in web_h2.SERVERS:
                if shutil.which("h2load") is None:
                    h2_rows.append({"server": name, "error": "h2load not installed (nghttp2-client)"})
                    continue
                h2_cmd = web_h2.command(name, work, www, port, peer_python)
                if h2_cmd is None:
                    h2_rows.append({"server": name, "error": "not installed"})
                    continue

                def h2_command(port: int, name: str = name) -> list[str]:
                    cmd = web_h2.command(name, work, www, port, peer_python)
                    assert cmd is not None
                    return cmd

                try:
                    h2_rows.append(web_h2.measure(name, h2_command, work, www, port, args.seconds, args.idle))
                except RuntimeError as exc:
                    h2_rows.append({"server": name, "error": str(exc)})
                continue
            if name in GZIP:
                if name.startswith("nginx") and "nginx" not in have:
                    gzip_rows.append({"server": name, "error": "not installed"})
                    continue

                def gz_command(port: int, name: str = name) -> list[str]:
                    cmd = server_command(name, work, www, port, peer_python)
                    assert cmd is not None
                    return cmd

                try:
                    gzip_rows.append(measure_gzip(name, gz_command, work, www, port, args.seconds))
                except RuntimeError as exc:
                    gzip_rows.append({"server": name, "error": str(exc)})
                continue
            installed = {"nginx": "nginx", "lighttpd": "lighttpd", "apache-event": "apache2"}
            cmd = None
            if not any(name.startswith(peer) and cmd_name not in have for peer, cmd_name in installed.items()):
                cmd = server_command(name, work, www, port, peer_python)
            if cmd is None:
                rows.append({"server": name, "error": "not installed"})
                continue

            def command(port: int, name: str = name) -> list[str]:
                cmd = server_command(name, work, www, port, peer_python)
                assert cmd is not None
                return cmd

            try:
                rows.append(measure(name, command, work, www, port, args.seconds, args.idle))
            except RuntimeError as exc:
                rows.append({"server": name, "error": str(exc)})
    body = table(rows, args.seconds) if rows else ""
    if gzip_rows:
        body += ("\n\n" if body else "") + gzip_table(gzip_rows, args.seconds)
    if h2_rows:
        body += ("\n\n" if body else "") + web_h2.table(h2_rows, args.seconds)
    write_report(args.out, "web", "web", body, (lambda plt: plot(plt, rows)) if rows else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
