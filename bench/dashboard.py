"""The dashboard's own figures (issue 20): with 10,000 messages stored, how long from the request to the last byte
for what the first paint needs (the page, its stylesheet and script) and for the inbox list, the search and the
counters the page asks for next -- the median of 20 of each, each on a new connection as a browser opening the page
makes them, on loopback. Target: 100 ms or less.

    python bench/dashboard.py                        # 10,000 messages, 20 requests per figure
    python bench/dashboard.py --quick --out /tmp/bench   # a smoke run: the script works (figures mean nothing)

Then the services' own figures beside it: ``sockhop serve web`` (event loop, access log on) under wrk, without a
dashboard, with one nobody watches (the counters are kept then, as --admin keeps them), and with one whose event
stream is open (what a browser on the page holds) -- the issue asks for no effect beyond noise while it is open.

The Maildir is written straight to disk (as sockhop's delivery names its files); the server is ``sockhop serve mail
--dashboard``, pinned to one core. The index is read once at start (its time is the first row); every request after
that is answered from memory, with one stat per Maildir folder to see whether anything arrived.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    fmt,
    need_tool,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    run_pinned,
    start_server,
    stop,
    write_report,
    wrk_seconds,
)

PORT, DASHBOARD_PORT = 12525, 18025
TARGET_MS = 100.0
PAGES = {  # what is asked, as the page asks it
    "first paint: the page": ["/"],
    "first paint: page + css + js": ["/", "/static/style.css", "/static/app.js"],
    "the inbox (200 newest)": ["/api/v1/messages?limit=200"],
    "a search over every message": ["/api/v1/messages?query=message+9999"],
    "one message opened": ["/api/v1/messages/{id}"],
    "the counters": ["/api/v1/services"],
}


def fill(maildir: Path, count: int) -> None:
    box = maildir / "you"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (box / "new" / f"{1_700_000_000 + i}.M{i}P1Q1.bench").write_bytes(
            (
                f"From: Sender {i} <s{i}@example.org>\nTo: you@sockhop.test\nSubject: message {i}\n"
                f"Date: Sun, 06 Dec 2026 10:00:00 +0000\nMessage-ID: <{i}@bench>\n\n" + f"body of message {i}\n" * 20
            ).encode()  # fmt: skip
        )


def get(path: str) -> bytes:
    """One request on a new connection, read to the last byte (Connection: close)."""
    with socket.create_connection(("127.0.0.1", DASHBOARD_PORT), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"GET {path}: {answer[:80]!r}")
    return answer


def timed(paths: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for path in paths:
            get(path)
        times.append((time.perf_counter() - started) * 1000)
    return times


WEB_PORT = 18080
BESIDE = {  # the web server's figure, and what the dashboard is doing meanwhile
    "no dashboard": None,
    "dashboard on, nobody watching": "on",
    "dashboard open (an event stream held)": "open",
}


def web_beside(top: Path, dashboard: str | None, seconds: float) -> float:
    """Keep-alive requests/s of ``sockhop serve web`` under wrk (-c50), with the dashboard as ``dashboard`` says."""
    site = top / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_bytes(b"<h1>hello</h1>\n" * 64)
    command = [sys.executable, "-m", "sockhop", "serve", "web", str(site), "--listen", f"127.0.0.1:{WEB_PORT}",
               "--access-log", str(top / "access.log"), "-q"]  # fmt: skip
    if dashboard:
        command += ["--dashboard", f"127.0.0.1:{DASHBOARD_PORT}"]
    proc = start_server(command, lambda: port_open(WEB_PORT), logs=[top / "web.log"])
    watcher = None
    try:
        if dashboard == "open":
            watcher = subprocess.Popen(["curl", "-sN", f"http://127.0.0.1:{DASHBOARD_PORT}/api/v1/events"],
                                       stdout=subprocess.DEVNULL)  # fmt: skip
            time.sleep(0.3)
        url = f"http://127.0.0.1:{WEB_PORT}/index.html"
        run_pinned(["wrk", "-t1", "-c50", "-d1s", url], capture_output=True, timeout=60)  # warm up
        out = run_pinned(["wrk", "-t1", "-c50", f"-d{wrk_seconds(seconds)}s", url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout  # fmt: skip
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(rate.group(1)) if rate else float("nan")
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait()
        stop(proc)


def main() -> int:
    parser = parser_for(__doc__, list(PAGES))
    parser.add_argument("--messages", type=int, default=10_000, help="messages stored (default 10000)")
    parser.add_argument("--repeat", type=int, default=20, help="requests per figure (default 20)")
    parser.add_argument("--seconds", type=float, default=10, help="wrk's run per web figure (default 10)")
    args = parse(parser, quick={"messages": 200, "repeat": 3, "seconds": 1})
    need_two_cores("wrk")
    need_tool("wrk", "wrk")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sockhop-dashbench-") as top:
        maildir = Path(top) / "mail"
        fill(maildir, args.messages)
        started = time.perf_counter()
        proc = start_server(
            [sys.executable, "-m", "sockhop", "serve", "mail", str(maildir), "--domain", "sockhop.test",
             "--listen", f"127.0.0.1:{PORT}", "--dashboard", f"127.0.0.1:{DASHBOARD_PORT}", "-q"],
            lambda: port_open(DASHBOARD_PORT), logs=[Path(top) / "server.log"], timeout=120, settle=0,
        )  # fmt: skip
        index_ms = (time.perf_counter() - started) * 1000
        try:
            body = get("/api/v1/messages?limit=1").split(b"\r\n\r\n", 1)[1]
            first_id = body.split(b'"ID": "', 1)[1].split(b'"', 1)[0].decode()
            for name in args.only or PAGES:
                paths = [p.format(id=first_id) for p in PAGES[name]]
                times = timed(paths, args.repeat)
                rows.append((name, statistics.median(times), max(times)))
                print(f"bench: {name}: median {statistics.median(times):.1f} ms", file=sys.stderr, flush=True)
        finally:
            stop(proc)
        beside = {}
        for name, how in BESIDE.items():
            beside[name] = web_beside(Path(top), how, args.seconds)
            print(f"bench: web, {name}: {beside[name]:,.0f} requests/s", file=sys.stderr, flush=True)
    lines = [f"{args.messages:,} messages stored; the median of {args.repeat} of each, request to last byte, a new "
             f"connection per request, loopback. Start-up with the index read: {fmt(index_ms)} ms.", "",
             "| what | median ms | slowest ms | within 100 ms |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    for name, median, slowest in rows:
        lines.append(f"| {name} | {median:.1f} | {slowest:.1f} | {'yes' if median <= TARGET_MS else 'NO'} |")
    base = beside["no dashboard"]
    run = f"wrk -t1 -c50, {wrk_seconds(args.seconds)} s"
    lines += ["", f"The web server beside it (`serve web`, event loop, access log on; {run}):", "",
              "| web server | requests/s | against none |", "| --- | ---: | ---: |"]  # fmt: skip
    for name, rate in beside.items():
        lines.append(f"| {name} | {fmt(rate)} | {rate / base:.2f}x |" if base == base else f"| {name} | - | - |")
    write_report(args.out, "dashboard", "dashboard", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
