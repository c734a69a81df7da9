#!/usr/bin/env python3
"""The reverse proxy's Python per request, for working on it: a fixed count of 1 KiB keep-alive GETs (h2load
``--h1 -n``) through ``sockhop serve web --proxy`` (eventloop) to an nginx upstream, as bench/proxy.py's ``ka``.

* CPU µs per request: the proxy's CPU over the counted requests (after a warm-up), as bench/proxy.py reads it;
* with ``--profile``: Python calls per request -- the proxy runs twice under cProfile, with ``--count`` requests and
  with a tenth of them, and the difference is divided by the requests between (so start-up and the stop cancel
  out); calls depend on the code, not on the machine's noise. The heaviest functions of the long run are printed.

    python bench/proxywork.py --count 20000 [--connections 50] [--vary] [--runs 3] [--profile] [--top 25]
    python bench/proxywork.py --quick        # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import argparse
import io
import pstats
import re
import shutil
import sys
import tempfile
from pathlib import Path

from common import cpu_seconds, micros_per, port_open, raise_nofile, run_pinned, sbin, start_server, stop
from proxy import UPSTREAM_PORT, folders, proxy_command, upstream_conf

PORT = 18299


def show_profile(stats: pstats.Stats, top: int) -> None:
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def calls_per_request(small: pstats.Stats, large: pstats.Stats, requests: int, top: int) -> None:
    """Each function's calls a request (the long run's less the short run's): what a change takes away."""
    before = small.stats  # type: ignore[attr-defined]
    rows = []
    for key, value in large.stats.items():  # type: ignore[attr-defined]
        calls = value[1] - before.get(key, (0, 0))[1]
        if calls > 0:
            rows.append((calls / requests, key))
    rows.sort(reverse=True)
    print(f"Python calls a request: {sum(r[0] for r in rows):.1f}, the most called:")
    for calls, (path, line, name) in rows[:top]:
        print(f"{calls:8.2f}  {path.split('/src/')[-1]}:{line}({name})")


def h2load(port: int, count: int, connections: int, vary: bool) -> int:
    """Requests that got a 2xx out of ``count``; ``vary``: two URLs in turn, so no request repeats the one before
    on its connection (the proxy parses each: ProxyServer._proxy_again never applies)."""
    urls = [f"http://127.0.0.1:{port}/index.html", *([f"http://127.0.0.1:{port}/index.html?b"] if vary else [])]
    cmd = ["h2load", "--h1", f"-n{count}", f"-c{connections}", *urls]
    out = run_pinned(cmd, capture_output=True, text=True, timeout=300).stdout
    done = re.search(r"status codes: (\d+) 2xx", out)
    return int(done.group(1)) if done else 0


def run(work: Path, count: int, connections: int, vary: bool, profile: Path | None) -> tuple[int, float]:
    """(2xx answers, the proxy's CPU seconds over them); under cProfile when ``profile`` names its output."""
    command = proxy_command("eventloop", work, PORT)
    if profile is not None:
        command = [command[0], "-m", "cProfile", "-o", str(profile), *command[1:]]
    proc = start_server(command, lambda: port_open(PORT), logs=[work / "proxy.out"])
    try:
        h2load(PORT, min(1000, count), connections, vary)  # warm-up: the upstream pool, the first accepts
        cpu = cpu_seconds(proc.pid)
        ok = h2load(PORT, count, connections, vary)
        cpu = cpu_seconds(proc.pid) - cpu
    finally:
        stop(proc, wait=30)
    return ok, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="requests measured (default 20000)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive client connections (default 50)")
    parser.add_argument("--vary", action="store_true", help="no request repeats the one before on its connection")
    parser.add_argument("--runs", type=int, default=1, help="CPU figure: the least of so many runs (default 1)")
    parser.add_argument("--profile", action="store_true", help="Python calls per request, and where they go")
    parser.add_argument("--top", type=int, default=25, help="functions shown with --profile (default 25)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few seconds, figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.count = 2000
    raise_nofile()
    for tool in ("h2load", "nginx"):
        if sbin(tool) is None:
            sys.exit(f"bench: {tool} is needed (bench/apt-packages.txt)")
    with tempfile.TemporaryDirectory(prefix="sockhop-proxywork-") as tmp:
        work = Path(tmp)
        www = folders(work)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        upstream = start_server([nginx, "-c", str(upstream_conf(work, www))], lambda: port_open(UPSTREAM_PORT),
                                cores=None, logs=[work / "upstream.out"])  # fmt: skip
        try:
            figures = [run(work, args.count, args.connections, args.vary, None) for _ in range(max(1, args.runs))]
            ok, cpu = min(figures, key=lambda f: micros_per(f[1], f[0]))
            every = ", ".join(f"{micros_per(c, n):.1f}" for n, c in figures)
            print(
                f"{ok} of {args.count} requests 2xx; proxy CPU {micros_per(cpu, ok):.1f} µs a request (runs: {every})"
            )
            if args.profile:
                small, large = work / "small.prof", work / "large.prof"
                few, _ = run(work, args.count // 10, args.connections, args.vary, small)
                many, _ = run(work, args.count, args.connections, args.vary, large)
                print(f"profiled: {many} and {few} requests")
                show_profile(pstats.Stats(str(large)), args.top)
                calls_per_request(pstats.Stats(str(small)), pstats.Stats(str(large)), max(1, many - few), args.top)
        finally:
            stop(upstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
