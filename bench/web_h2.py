"""The HTTP/2 section of bench/web.py: h2load against sockhop's eventloop, nginx (one worker, http2) and Hypercorn
(the Python HTTP/2 server, on Starlette's StaticFiles), each pinned to the server core:

* ``h2c``  -- a 1 KiB file, 50 connections x 10 concurrent streams, cleartext with prior knowledge (requests/s);
* ``tls``  -- the same over TLS, h2 by ALPN (requests/s);
* ``big``  -- a 1 MiB file, 10 connections x 1 stream, h2c (MiB/s);
* ``idle`` -- HTTP/2 connections that made one request and sit idle, and the server's memory (PSS) per connection.

nginx has ``keepalive_requests`` raised: its default ends each connection after 1,000 requests, which h2load counts
as failures.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import CLIENT_CORE, fmt, idle_memory, ratio, run_pinned, sockets_held, start_server, stop, wait_quiet

SERVERS = ["h2-eventloop", "h2-nginx", "h2-hypercorn"]
CONFIGS = ("h2c", "tls", "big")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def certificate(work: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (h2load does not verify it)."""
    cert, key = work / "h2-cert.pem", work / "h2-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
             "2", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert, key


def nginx_http2_on(nginx: str) -> bool:
    """nginx 1.25.1 and later say ``http2 on``; before, ``listen ... http2`` (Debian 12 has 1.22)."""
    text = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    return bool(found) and tuple(map(int, found.groups())) >= (1, 25, 1)


def nginx_conf(work: Path, www: Path, port: int, cert: Path, key: Path, http2_on: bool) -> Path:
    conf = work / "nginx-h2.conf"
    listen_h2 = "" if http2_on else " http2"
    conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {work}/nginx-h2.pid;
error_log {work}/nginx-h2-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    {"http2 on;" if http2_on else ""}
    listen 127.0.0.1:{port}{listen_h2};
    listen 127.0.0.1:{port + 1} ssl{listen_h2};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {www};
  }}
}}
""")
    return conf


def command(name: str, work: Path, www: Path, port: int, peer_python: Path | None) -> list[str] | None:
    """``name`` listening for h2c on ``port`` and for h2 over TLS on ``port + 1``; None if it is not installed."""
    cert, key = certificate(work)
    if name == "h2-eventloop":
        return [
            sys.executable, "-m", "sockhop", "serve", "web", str(www), "--model", "eventloop",
            "--listen", f"127.0.0.1:{port}", "--listen-tls", f"127.0.0.1:{port + 1}", "--tls-cert", str(cert),
            "--tls-key", str(key), "--max-connections", "20000", "--idle-timeout", "300",
            "--max-requests", "100000000", "--grace", "1", "--no-access-log",
        ]  # fmt: skip
    if name == "h2-nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            return None
        return [nginx, "-c", str(nginx_conf(work, www, port, cert, key, nginx_http2_on(nginx)))]
    if name == "h2-hypercorn":
        if peer_python is None:
            return None
        # One process serves both binds: h2c (prior knowledge) on the first, TLS on the second (--insecure-bind).
        return [
            str(peer_python), "-m", "hypercorn", "--bind", f"127.0.0.1:{port + 1}", "--insecure-bind",
            f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key), "--workers", "1",
            "--keep-alive", "300", "uv_app:app",
        ]  # fmt: skip
    raise ValueError(name)


def answers_h2(port: int) -> bool:
    """A probe: the server answers the connection preface with its SETTINGS."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(PREFACE + SETTINGS)
            head = sock.recv(9)
            return len(head) >= 4 and head[3] == 4
    except OSError:
        return False


def h2load(url: str, seconds: float, conns: int, streams: int) -> tuple[float, float, str]:
    """One h2load run: (requests/s, MiB/s, a note of failures)."""
    cmd = ["h2load", "-t", "1", "-c", str(conns), "-m", str(streams), "-D", str(max(1, int(seconds))), url]
    try:
        out = run_pinned(cmd, {CLIENT_CORE}, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return 0.0, 0.0, "h2load hung"
    done = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    counts = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    note = ""
    if counts and (int(counts.group(2)) or int(counts.group(3))):
        note = f"{counts.group(2)} failed, {counts.group(3)} errored"
    if not done:
        return 0.0, 0.0, note or "no result"
    scale = {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}[done.group(3)]
    return float(done.group(1)), float(done.group(2)) * scale, note


def idle(pid: int, port: int, count: int, timeout: float = 60) -> tuple[int, float]:
    """``count`` h2c connections that each fetched the 1 KiB file once and then sit idle."""
    import hpack

    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/index.html"),
                                    (":authority", "127.0.0.1")])  # fmt: skip
    request = PREFACE + SETTINGS + len(block).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + block

    def open_connections(socks: list[socket.socket], held) -> int:
        sel = selectors.DefaultSelector()
        state: dict[socket.socket, int] = {}
        done = 0
        try:
            deadline = time.monotonic() + timeout
            while (len(socks) < count or state) and time.monotonic() < deadline:
                while len(socks) < count and len(state) < 500:
                    sock = socket.socket()
                    sock.setblocking(False)
                    try:
                        sock.connect(("127.0.0.1", port))
                    except BlockingIOError:
                        pass
                    socks.append(sock)
                    state[sock] = 0
                    sel.register(sock, selectors.EVENT_WRITE)
                for key, events in sel.select(timeout=1):
                    sock = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        try:
                            sock.send(request)
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
                    state[sock] += len(data)
                    if not data or state[sock] >= 1024 + 100:  # SETTINGS, the head and the 1 KiB body: answered
                        sel.unregister(sock)
                        state.pop(sock)
                        done += bool(data)
        finally:
            sel.close()
        return done

    return idle_memory(pid, count, open_connections, pause=1.0)


def measure(name: str, cmd, work: Path, www: Path, port: int, seconds: float, idle_count: int) -> dict:
    """Every figure of one server; ``cmd(port)`` is its command line."""
    env = {**os.environ, "ROOT": str(www)}
    row: dict = {"server": name, "notes": []}
    proc = start_server(cmd(port), lambda: answers_h2(port), cwd=work, logs=[work / f"{name}.out"], env=env)
    fresh = sockets_held(proc.pid)
    try:
        h2load(f"http://127.0.0.1:{port}/index.html", min(1.0, seconds), 10, 10)  # warm up
        runs = {
            "h2c": (f"http://127.0.0.1:{port}/index.html", 50, 10),
            "tls": (f"https://127.0.0.1:{port + 1}/index.html", 50, 10),
            "big": (f"http://127.0.0.1:{port}/big.bin", 10, 1),
        }
        for config, (url, conns, streams) in runs.items():
            wait_quiet(proc.pid, fresh)
            rate, mib, note = h2load(url, seconds, conns, streams)
            row[config] = mib if config == "big" else rate
            if note:
                row["notes"].append(f"{config}: {note}")
    finally:
        stop(proc)
    row["idle"], row["kib"] = 0, float("nan")
    if idle_count > 0:
        port += 2
        proc = start_server(cmd(port), lambda: answers_h2(port), cwd=work, logs=[work / f"{name}.out"], env=env)
        try:
            row["idle"], row["kib"] = idle(proc.pid, port, idle_count)
        finally:
            stop(proc)
    return row


def table(rows: list[dict], seconds: float) -> str:
    by = {r["server"]: r for r in rows if "error" not in r}
    nginx, hyper = by.get("h2-nginx"), by.get("h2-hypercorn")
    lines = [
        "## HTTP/2",
        "",
        "| server | 1 KiB h2c req/s | ÷ nginx | ÷ Hypercorn | 1 KiB TLS req/s | ÷ nginx | ÷ Hypercorn "
        "| 1 MiB h2c MiB/s | ÷ nginx | idle held | KiB per idle conn | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['server']} | - | - | - | - | - | - | - | - | - | - | {r['error']} |")
            continue
        n = nginx or {}
        h = hyper or {}
        lines.append(
            f"| {r['server']} | {fmt(r['h2c'])} | {ratio(r['h2c'], n.get('h2c'))} | {ratio(r['h2c'], h.get('h2c'))} "
            f"| {fmt(r['tls'])} | {ratio(r['tls'], n.get('tls'))} | {ratio(r['tls'], h.get('tls'))} "
            f"| {fmt(r['big'], 1)} | {ratio(r['big'], n.get('big'))} "
            f"| {fmt(r['idle']) if r['idle'] else '-'} | {fmt(r['kib'], 2)} | {'; '.join(r['notes'])} |"
        )
    ours = by.get("h2-eventloop")
    lines.append("")
    if ours and nginx:
        for config, label, target in (("h2c", "1 KiB h2c", 0.5), ("tls", "1 KiB TLS", 0.5), ("big", "1 MiB", 0.7)):
            lines.append(f"- eventloop / nginx, {label}: **{ratio(ours[config], nginx[config])}** (target ≥ {target}x)")
    if ours and hyper:
        for config, label in (("h2c", "1 KiB h2c"), ("tls", "1 KiB TLS")):
            lines.append(f"- eventloop / Hypercorn, {label}: **{ratio(ours[config], hyper[config])}** (target ≥ 5x)")
    if ours and ours["idle"]:
        lines.append(
            f"- eventloop: {ours['idle']:,} idle HTTP/2 connections at {ours['kib']:.2f} KiB each (target ≤ 16 KiB)"
        )
    lines.append("")
    lines.append(
        f"h2load -t1 pinned to core {CLIENT_CORE}, {seconds:g} s per figure after a warm-up: 50 connections x 10 "
        "streams for the 1 KiB file, 10 x 1 for the 1 MiB one. nginx: one worker, `http2 on` (`listen ... http2` "
        "before 1.25.1), keepalive_requests raised. Hypercorn: one worker, Starlette's StaticFiles."
    )
    return "\n".join(lines)
