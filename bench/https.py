#!/usr/bin/env python3
"""HTTPS: sockhop's web server (eventloop, prefork) against nginx with the same certificate, in one run.

Each server runs on core 0 (nginx with one worker, sockhop prefork with one), wrk on core 1 with one thread:

* 1 KiB keep-alive: requests per second over 64 kept TLS connections;
* a new TLS connection per request (``Connection: close``): full handshakes per second (wrk does not resume
  sessions, so each is a full ECDHE handshake and certificate signature);
* memory per idle connection (PSS) held open after its TLS handshake, beside the same over plaintext.

The issue's targets: keep-alive >= 0.4x nginx, handshakes >= 0.6x nginx. Only ratios within one run count.

    make bench                                       # everything
    python bench/https.py --seconds 1 --idle 50      # a quick look
    python bench/https.py --quick --out /tmp/bench   # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    ROOT,
    fmt,
    idle_memory,
    need_tool,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    raise_nofile,
    run_pinned,
    start_server,
    stop,
    write_report,
    wrk_seconds,
)

PORT = 17900
SERVERS = ["sockhop-eventloop", "sockhop-prefork", "nginx"]
CONNECTIONS = 64  # wrk's kept connections


def make_pki(work: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 made with sockhop's local CA (cryptography), shared by every server."""
    sys.path.insert(0, str(ROOT / "src"))
    from sockhop.localca import CertificateAuthority, KeyPair

    ca = CertificateAuthority.create("sockhop bench CA")
    ca.save(KeyPair(work / "ca.pem", work / "ca.key"))
    leaf = ca.issue(["localhost", "127.0.0.1"], KeyPair(work / "cert.pem", work / "key.pem"))
    return work / "ca.pem", leaf.cert, leaf.key


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


def command(name: str, work: Path, site: Path, cert: Path, key: Path, plain: int, tls: int) -> list[str]:
    if name == "nginx":
        conf = work / "nginx.conf"
        conf.write_text(f"""
daemon off; worker_processes 1; user root root; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 20000; }}
http {{
    access_log off; keepalive_requests 1000000; keepalive_timeout 300;
    client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
    uwsgi_temp_path {work}; scgi_temp_path {work};
    server {{
        listen 127.0.0.1:{plain}; listen 127.0.0.1:{tls} ssl; root {site};
        ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;
    }}
}}
""")
        return [nginx_binary() or "nginx", "-c", str(conf), "-p", str(work)]
    model = name.removeprefix("sockhop-")
    return [
        sys.executable, "-m", "sockhop", "serve", "web", str(site), "--model", model, "--workers", "1",
        "--listen", f"127.0.0.1:{plain}", "--listen-tls", f"127.0.0.1:{tls}", "--tls-cert", str(cert),
        "--tls-key", str(key), "--no-access-log", "--max-connections", "20000", "--idle-timeout", "300",
        "--max-requests", "1000000", "--grace", "1",
    ]  # fmt: skip


def start(cmd: list[str], ports: tuple[int, int]) -> subprocess.Popen:
    return start_server(cmd, lambda: all(port_open(port) for port in ports), timeout=15)


def wrk(url: str, seconds: float, *headers: str) -> float:
    """Requests per second, wrk on the client core with one thread."""
    extra = [arg for header in headers for arg in ("-H", header)]
    out = run_pinned(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{wrk_seconds(seconds)}s", *extra, url],
                     capture_output=True, text=True, timeout=seconds + 60)  # fmt: skip
    match = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out.stdout)
    if errors:
        print(f"bench: wrk {url}: {errors.group(0)}", file=sys.stderr)
    return float(match.group(1)) if match else 0.0


def idle_kib(proc: subprocess.Popen, port: int, count: int, context: ssl.SSLContext | None) -> float:
    """KiB of server memory per idle connection: ``count`` connections held open (after the TLS handshake when
    ``context`` is given), the server's PSS before and after."""

    def open_connections(socks: list[socket.socket], held) -> int:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname="localhost")
            socks.append(sock)
        return count

    return idle_memory(proc.pid, count, open_connections)[1]


def measure(name: str, work: Path, site: Path, pki: tuple[Path, Path, Path], port: int, args) -> dict:
    ca, cert, key = pki
    plain, tls = port, port + 1
    row: dict = {"server": name}
    url = f"https://127.0.0.1:{tls}/1k.bin"
    proc = start(command(name, work, site, cert, key, plain, tls), (plain, tls))
    try:
        row["keepalive"] = wrk(url, args.seconds)
        row["handshakes"] = wrk(url, args.seconds, "Connection: close")
    finally:
        stop(proc)
    context = ssl.create_default_context(cafile=str(ca))
    for kind, ctx, p in (("kib_tls", context, tls), ("kib_plain", None, plain)):
        proc = start(command(name, work, site, cert, key, plain + 2, tls + 2), (plain + 2, tls + 2))
        try:
            row[kind] = idle_kib(proc, p + 2, args.idle, ctx)
        finally:
            stop(proc)
    return row


def table(rows: list[dict], seconds: float, idle: int) -> str:
    nginx = next((row for row in rows if row["server"] == "nginx"), None)
    lines = [
        f"wrk -t1 -c{CONNECTIONS}, {seconds:g} s per figure; 1 KiB file; server and wrk on separate cores; idle memory "
        f"over {idle} connections (PSS).",
        "",
        "| server | keep-alive req/s | x nginx | new TLS conn/s | x nginx | KiB/idle TLS conn | KiB/idle plain conn |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratios = []
        for key in ("keepalive", "handshakes"):
            ratios.append(fmt(row[key] / nginx[key], 2) if nginx and nginx[key] else "-")
        lines.append(
            f"| {row['server']} | {fmt(row['keepalive'])} | {ratios[0]} | {fmt(row['handshakes'])} | {ratios[1]} "
            f"| {fmt(row['kib_tls'], 1)} | {fmt(row['kib_plain'], 1)} |"
        )
    lines += ["", "Targets: keep-alive >= 0.40x nginx, new TLS connections >= 0.60x nginx."]
    return "\n".join(lines)


def main() -> int:
    parser = parser_for(__doc__, SERVERS)
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure, whole seconds (default 5)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections to hold (default 1000)")
    args = parse(parser, quick={"seconds": 1.0, "idle": 20})
    args.seconds = wrk_seconds(args.seconds)  # what wrk will run, so that the table says it
    need_two_cores("wrk")
    need_tool("wrk", "wrk")
    raise_nofile()
    names = [name for name in args.only or SERVERS if name != "nginx" or nginx_binary()]
    if "nginx" not in names:
        print("bench: nginx is not installed (apt-get install nginx-light): measured without it", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sockhop-https-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx's worker reads the site and certificate
        site = work / "site"
        site.mkdir()
        (site / "1k.bin").write_bytes(os.urandom(1024))
        pki = make_pki(work)
        for i, name in enumerate(names):
            print(f"bench: https {name} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, work, site, pki, PORT + 10 * i, args))
    write_report(args.out, "https", "HTTPS", table(rows, args.seconds, args.idle))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # a server that would not start, or a port someone else holds: one line
        sys.exit(f"bench: {exc}")
