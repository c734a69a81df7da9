#!/usr/bin/env python3
"""A soak: keep-alive load for minutes on end, the server's memory sampled every minute -- does it level off or leak?

Two phases, each a fresh sockhop (eventloop) pinned to core 0 under ``wrk -c200`` on core 1: the static path (a
1 KiB file) and the reverse proxy (the same file from an nginx upstream, which shares core 1 with wrk). wrk runs a
minute at a time; after each minute the server's RSS (and PSS) is read from /proc. The verdict is the issue's:
flat within 5 % after the first minute.

    make bench                                   # with the others (10 minutes a phase)
    python bench/soak.py --minutes 3
    python bench/soak.py --quick --out /tmp/bench   # a smoke run: seconds, and its figures mean nothing
    python bench/soak.py --only proxy
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    CLIENT_CORE,
    fmt,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    pss_kib,
    raise_nofile,
    rss_kib,
    run_pinned,
    sbin,
    start_server,
    stop,
    write_report,
)
from proxy import upstream_conf

PHASES = ["static", "proxy"]
UPSTREAM_PORT = 18280  # proxy.py's upstream configuration
PORT = 18390


def wrk_for(port: int, seconds: int, conns: int) -> float:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/index.html"]
    try:
        out = run_pinned(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return 0.0
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(rate.group(1)) if rate else 0.0


def soak(phase: str, work: Path, www: Path, samples: int, every: int, conns: int) -> list[dict]:
    port = PORT + PHASES.index(phase)
    extra = ["--proxy", f"/=http://127.0.0.1:{UPSTREAM_PORT}"] if phase == "proxy" else []
    cmd = [
        sys.executable, "-m", "sockhop", "serve", "web", str(www), "--model", "eventloop",
        "--listen", f"127.0.0.1:{port}", "--max-connections", "20000", "--idle-timeout", "300",
        "--max-requests", "100000000", "--grace", "1", "--no-access-log", *extra,
    ]  # fmt: skip
    proc = start_server(cmd, lambda: port_open(port), logs=[work / f"{phase}.out"])
    rows = [{"at": 0, "rate": float("nan"), "rss": rss_kib(proc.pid) / 1024, "pss": pss_kib(proc.pid) / 1024}]
    try:
        for i in range(samples):
            rate = wrk_for(port, every, conns)
            rows.append({"at": (i + 1) * every, "rate": rate, "rss": rss_kib(proc.pid) / 1024,
                         "pss": pss_kib(proc.pid) / 1024})  # fmt: skip
            print(f"bench: {phase} {rows[-1]['at']} s: {rate:,.0f} req/s, RSS {rows[-1]['rss']:.1f} MiB",
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        stop(proc)
    return rows


def table(phase: str, rows: list[dict], conns: int) -> str:
    lines = [f"### {phase} (wrk -c{conns})", "", "| after | req/s | RSS MiB | PSS MiB |"]
    lines.append("| ---: | ---: | ---: | ---: |")
    for row in rows:
        lines.append(f"| {row['at']} s | {fmt(row['rate'])} | {fmt(row['rss'], 1)} | {fmt(row['pss'], 1)} |")
    if len(rows) >= 3:
        first, last = rows[1]["rss"], rows[-1]["rss"]
        drift = (last - first) / first * 100 if first else float("nan")
        verdict = "flat" if abs(drift) <= 5 else "NOT flat"
        said = f"RSS after the first sample {first:.1f} MiB, at the end {last:.1f} MiB: {drift:+.1f} %"
        lines += ["", f"{said} ({verdict} within 5 %)"]
    return "\n".join(lines)


def main() -> int:
    parser = parser_for(__doc__, PHASES, "soak only these")
    parser.add_argument("--minutes", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument("--every", type=int, default=60, metavar="S", help="seconds between samples (default 60)")
    parser.add_argument("--connections", type=int, default=200, help="wrk's keep-alive connections (default 200)")
    args = parse(parser, quick={"minutes": 0.1, "every": 2, "connections": 50})
    need_two_cores("wrk")
    raise_nofile()
    for tool in ("wrk", "nginx"):
        if sbin(tool) is None:
            sys.exit(f"bench: {tool} is needed (bench/apt-packages.txt)")
    samples = max(2, round(args.minutes * 60 / args.every))
    parts = [f"{samples} samples, one every {args.every} s, per phase."]
    with tempfile.TemporaryDirectory(prefix="sockhop-soak-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        www = work / "www"
        www.mkdir(mode=0o755)
        (www / "index.html").write_bytes(b"a" * 1024)
        (www / "index.html").chmod(0o644)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        upstream = start_server([nginx, "-c", str(upstream_conf(work, www))], lambda: port_open(UPSTREAM_PORT),
                                cores=(CLIENT_CORE,), logs=[work / "upstream.out"])  # fmt: skip
        try:
            for phase in args.only or PHASES:
                try:
                    parts.append(table(phase, soak(phase, work, www, samples, args.every, args.connections),
                                       args.connections))  # fmt: skip
                except RuntimeError as exc:
                    parts.append(f"### {phase}\n\n{exc}")
        finally:
            stop(upstream)
    write_report(args.out, "soak", "soak", "\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
