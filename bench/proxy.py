#!/usr/bin/env python3
"""The reverse proxy: wrk through sockhop's ``--proxy`` and through nginx's ``proxy_pass`` to the same upstream, an
nginx serving the files; a markdown table.

The proxy under test is pinned to core 0; wrk and the upstream nginx share core 1 (the same for every proxy, so
the ratio is fair). For each proxy:

* ``ka``     -- a 1 KiB file, keep-alive, 50 connections (requests/s), and the proxy's CPU per request;
* ``upload`` -- 1 MiB POST bodies, keep-alive, 10 connections (MiB/s; the upstream reads and drops them);
* ``big``    -- a 1 GiB download and a 1 GiB upload (``curl -T``), once each (MiB/s), and the proxy's peak memory
  (VmHWM) after all of it: streamed, never held.

nginx proxies as it is usually told to for keep-alive upstreams (``proxy_http_version 1.1``, ``Connection ""``,
``keepalive 32``), with ``proxy_buffering on`` (its default) and one worker, as the static benchmark runs it; the
1 GiB upload with ``proxy_request_buffering off`` (else nginx writes it to disk first). sockhop's ``--max-body``
is 2G there, so the 1 MiB uploads are not refused by either (nginx's ``client_max_body_size 2m``).

    make bench                                     # with the others
    python bench/proxy.py --seconds 5
    python bench/proxy.py --quick --out /tmp/bench # a smoke run: the script works (figures mean nothing)
    python bench/proxy.py --only eventloop prefork
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
    cpu_seconds,
    fmt,
    micros_per,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    process_tree,
    raise_nofile,
    ratio,
    run_pinned,
    sbin,
    start_server,
    stop,
    write_report,
    wrk_seconds,
)

UPSTREAM_PORT = 18280
PORT = 18290
PROXIES = ["nginx", "eventloop", "prefork", "thread"]
GiB = 1024**3

UPLOAD_LUA = """\
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def nginx_common(work: Path, name: str) -> str:
    return f"""\
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
"""


def temp_paths(work: Path, name: str) -> str:
    return "".join(f"  {kind}_temp_path {work}/{name}-{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                              "uwsgi", "scgi"))  # fmt: skip


def upstream_conf(work: Path, www: Path) -> Path:
    conf = work / "upstream.conf"
    conf.write_text(f"""{nginx_common(work, "upstream")}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
{temp_paths(work, "upstream")}
  server {{
    listen 127.0.0.1:{UPSTREAM_PORT};
    root {www};
    location = /upload {{ client_max_body_size 2m; client_body_buffer_size 2m; return 200 "ok\\n"; }}
    location = /bigupload {{ client_max_body_size 0; return 200 "ok\\n"; }}
  }}
}}
""")
    return conf


def nginx_proxy_conf(work: Path, port: int) -> Path:
    conf = work / "proxy.conf"
    conf.write_text(f"""{nginx_common(work, "proxy")}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 2m;
{temp_paths(work, "proxy")}
  upstream up {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location = /bigupload {{ client_max_body_size 0; proxy_request_buffering off; proxy_pass http://up;
                             proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    return conf


def folders(work: Path) -> Path:
    """The folders a run uses in ``work`` (readable by nginx's worker, whatever its user): the proxy's empty root,
    and the upstream's root with its 1 KiB index.html, which is returned."""
    work.chmod(0o755)
    (work / "empty").mkdir()
    www = work / "www"
    www.mkdir(mode=0o755)
    (www / "index.html").write_bytes(b"a" * 1024)
    (www / "index.html").chmod(0o644)
    return www


def proxy_command(name: str, work: Path, port: int) -> list[str]:
    if name == "nginx":
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(nginx_proxy_conf(work, port))]
    workers = {"prefork": "1"}.get(name, "1")
    return [
        sys.executable, "-m", "sockhop", "serve", "web", str(work / "empty"), "--model", name,
        "--listen", f"127.0.0.1:{port}", "--workers", workers, "--max-connections", "20000", "--idle-timeout", "300",
        "--max-requests", "100000000", "--grace", "1", "--no-access-log", "--max-body", "2G",
        "--proxy", f"/=http://127.0.0.1:{UPSTREAM_PORT}",
    ]  # fmt: skip


def wrk(port: int, seconds: float, upload: Path | None) -> tuple[float, str]:
    """(requests/s; a note of errors)."""
    extra = ["-s", str(upload)] if upload else []
    conns = 10 if upload else 50
    path = "/upload" if upload else "/index.html"
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{wrk_seconds(seconds)}s", *extra, f"http://127.0.0.1:{port}{path}"]
    try:
        out = run_pinned(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return 0.0, "wrk hung"
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    notes = "; ".join(line.strip() for line in out.splitlines() if "errors" in line or "Non-2xx" in line)
    return (float(rate.group(1)) if rate else 0.0), notes


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def upload_file(port: int, path: Path) -> tuple[float, str]:
    """MiB/s of one curl upload of ``path`` (a PUT, streamed from the file) through the proxy."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-T", str(path), "-w", "%{http_code} %{size_upload} %{speed_upload}",
           f"http://127.0.0.1:{port}/bigupload"]  # fmt: skip
    done = run_pinned(cmd, capture_output=True, text=True, timeout=600)
    code, sent, speed = (done.stdout.split() + ["0", "0", "0"])[:3]
    size = path.stat().st_size
    note = "" if code == "200" and int(sent) == size else f"HTTP {code}, sent {sent} of {size} bytes"
    return float(speed) / 1048576, note


def download(port: int, size: int) -> tuple[float, str]:
    """MiB/s of one curl download of ``size`` bytes through the proxy."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}",
           f"http://127.0.0.1:{port}/huge.bin"]  # fmt: skip
    done = run_pinned(cmd, capture_output=True, text=True, timeout=600)
    got, speed = (done.stdout.split() + ["0", "0"])[:2]
    note = "" if int(got) == size else f"got {got} of {size} bytes"
    return float(speed) / 1048576, note


def measure(name: str, work: Path, seconds: float, upload: Path, huge: int) -> dict:
    port = PORT + PROXIES.index(name)
    row: dict = {"proxy": name, "notes": []}
    proc = start_server(proxy_command(name, work, port), lambda: port_open(port), logs=[work / f"{name}.out"])
    try:
        wrk(port, min(1.0, seconds), None)  # warm up: the upstream pool, the first accepts
        cpu = cpu_seconds(proc.pid)
        row["ka"], note = wrk(port, seconds, None)
        row["us"] = micros_per(cpu_seconds(proc.pid) - cpu, row["ka"] * seconds)
        if note:
            row["notes"].append(f"ka: {note}")
        cpu = cpu_seconds(proc.pid)
        row["upload"], note = wrk(port, seconds, upload)
        row["us_upload"] = micros_per(cpu_seconds(proc.pid) - cpu, row["upload"] * seconds)
        if note:
            row["notes"].append(f"upload: {note}")
        row["big"], note = download(port, huge)
        if note:
            row["notes"].append(f"big: {note}")
        row["big_up"], note = upload_file(port, work / "www" / "huge.bin")
        if note:
            row["notes"].append(f"big upload: {note}")
        row["hwm"] = max(peak_kib(pid) for pid in process_tree(proc.pid)) / 1024
    finally:
        stop(proc)
    return row


def table(rows: list[dict], seconds: float, huge: int) -> str:
    base = next((r for r in rows if r["proxy"] == "nginx" and "error" not in r), None)
    lines = [
        f"Through the proxy to one nginx upstream; wrk {wrk_seconds(seconds)} s per figure; the download is "
        f"{huge / GiB:g} GiB once each way.",
        "",
        "| proxy | 1 KiB ka req/s | vs nginx | CPU µs/req | 1 MiB uploads MiB/s | vs nginx | CPU µs/upload | "
        "download MiB/s | upload MiB/s | peak RSS MiB | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['proxy']} | {row['error']} ||||||||||")
            continue
        lines.append(
            f"| {row['proxy']} | {fmt(row['ka'])} | {ratio(row['ka'], base and base['ka'])} | {fmt(row['us'], 1)} | "
            f"{fmt(row['upload'])} | {ratio(row['upload'], base and base['upload'])} | {fmt(row['us_upload'], 0)} | "
            f"{fmt(row['big'])} | {fmt(row['big_up'])} | {fmt(row['hwm'], 1)} | {'; '.join(row['notes'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = parser_for(__doc__, PROXIES, "measure only these (nginx is the base)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per figure, whole seconds (default 10)")
    parser.add_argument("--download", type=float, default=1.0, metavar="GIB", help="the big download (default 1)")
    args = parse(parser, quick={"seconds": 1.0, "download": 1 / 64})
    need_two_cores("wrk")
    raise_nofile()
    for tool in ("wrk", "nginx", "curl"):
        if sbin(tool) is None:
            sys.exit(f"bench: {tool} is needed (bench/apt-packages.txt)")
    huge = int(args.download * GiB)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sockhop-proxy-bench-") as tmp:
        work = Path(tmp)
        www = folders(work)
        with open(www / "huge.bin", "wb") as f:  # sparse: no disk, the page cache's zeros
            f.truncate(huge)
        for path in (www, *www.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        upload = work / "upload.lua"
        upload.write_text(UPLOAD_LUA)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        upstream = start_server([nginx, "-c", str(upstream_conf(work, www))], lambda: port_open(UPSTREAM_PORT),
                                cores=(CLIENT_CORE,), logs=[work / "upstream.out"])  # fmt: skip
        try:
            for name in args.only or PROXIES:
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                try:
                    rows.append(measure(name, work, wrk_seconds(args.seconds), upload, huge))
                except RuntimeError as exc:
                    rows.append({"proxy": name, "error": str(exc)})
        finally:
            stop(upstream)
    write_report(args.out, "proxy", "reverse proxy", table(rows, args.seconds, huge))
    return 0


if __name__ == "__main__":
    sys.exit(main())
