#!/usr/bin/env python3
"""Measure every sockhop model and the peers in one run, and write a markdown table and a PNG plot.

The server under test is pinned to core 0, the load generator (bench/echoload.c, built here with cc) to core 1,
so they never share a core. For each server:

* echo round trips per second with 1, 16 and 256 concurrent connections (64-byte messages);
* new connections per second (connect, one exchange, close; 16 at a time) -- where fork pays its price;
* idle connections held, and the server's memory per connection (PSS, so forked children's shared pages are
  counted once).

Peers in the same run: the same echo on asyncio's default loop (as a Protocol, its fastest API, and as
asyncio-streams, the StreamReader/StreamWriter way its documentation writes servers) and on uvloop. Only ratios
measured in one run count: absolute figures move with the machine and the day.

    make bench                         # everything, default durations
    python bench/run.py --seconds 1 --idle 1000 --only eventloop asyncio   # a quick look
    python bench/run.py --quick --out /tmp/bench   # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BUILD,
    CLIENT_CORE,
    HERE,
    SERVER_CORE,
    build_c,
    cpu_split,
    fmt,
    grouped_bars,
    idle_memory,
    micros_per,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    raise_nofile,
    ratio,
    run_pinned,
    sockets_held,
    start_server,
    stop,
    wait_quiet,
    write_report,
)

PORT = 17700

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
PEERS = ["asyncio", "uvloop", "asyncio-streams"]  # asyncio: a Protocol, its fastest API; -streams: as its docs write
# Holding 10,000 idle clients as processes or threads is what those models cannot afford; they are measured at a
# smaller count and the table says so (the per-connection figure is what compares).
IDLE_CAP = {"fork": 1000, "thread": 2000}
CALLGRIND = ["eventloop", "asyncio", "uvloop"]  # single-process servers, where callgrind sees all the work


def server_command(name: str, port: int) -> list[str]:
    py = sys.executable
    if name in PEERS:
        cmd = [py, str(HERE / "peers" / "asyncio_echo.py"), "--port", str(port)]
        return cmd + {"uvloop": ["--uvloop"], "asyncio-streams": ["--streams"]}.get(name, [])
    workers = {"pool": "32", "prefork": "1"}.get(name, "1")
    return [
        py, "-m", "sockhop", "serve", "echo", "--model", name, "--listen", f"127.0.0.1:{port}",
        "--workers", workers, "--max-connections", "20000", "--idle-timeout", "300", "--grace", "1",
    ]  # fmt: skip


def start(name: str, port: int) -> subprocess.Popen:
    return start_server(server_command(name, port), lambda: port_open(port), timeout=15)


def load(binary: Path, port: int, mode: str, n: int, seconds: float) -> tuple[float, int]:
    """One echoload run on the client core: (exchanges per second, exchanges done)."""
    out = run_pinned([str(binary), "127.0.0.1", str(port), mode, str(n), str(seconds)], capture_output=True,
                     text=True, timeout=seconds + 60)  # fmt: skip
    fields = out.stdout.split()
    if len(fields) < 5:
        print(f"bench:   echoload {mode} {n}: {out.stderr.strip() or 'no result'}", file=sys.stderr)
        return 0.0, 0
    if int(fields[4]):
        print(f"bench:   echoload {mode} {n}: {fields[4]} errors (connections reset or refused)", file=sys.stderr)
    return float(fields[3]), int(fields[1])


def idle(proc: subprocess.Popen, port: int, count: int, timeout: float = 60) -> tuple[int, float]:
    """Open ``count`` idle connections (nonblocking connects, in batches so the backlog is never the limit), wait
    until the server holds them, and return (held, KiB of server memory per connection)."""

    def open_connections(socks: list[socket.socket], held) -> int:
        deadline = time.monotonic() + timeout
        while len(socks) < count and time.monotonic() < deadline:
            for _ in range(min(200, count - len(socks))):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                socks.append(s)
            target = len(socks)
            while time.monotonic() < deadline and held() < target - 50:
                time.sleep(0.05)
        return len(socks)

    return idle_memory(proc.pid, count, open_connections, settle=5)


def round_trips(proc: subprocess.Popen, binary: Path, port: int, n: int, seconds: float) -> tuple[float, float, float]:
    """Round trips per second over ``n`` connections, and the server's CPU per round trip split into its own
    (user-space) work and the kernel's (TCP on loopback, which no engine avoids): steadier than rates when something
    else shares the machine."""
    user, system = cpu_split(proc.pid)
    rate, done = load(binary, port, "rt", n, seconds)
    user_after, system_after = cpu_split(proc.pid)
    return rate, micros_per(user_after - user, done), micros_per(system_after - system, done)


def measure(name: str, binary: Path, port: int, seconds: float, idle_count: int) -> dict:
    row: dict = {"server": name}
    proc = start(name, port)
    fresh = sockets_held(proc.pid)
    try:
        for n in (1, 16, 256):
            wait_quiet(proc.pid, fresh)
            row[f"rt{n}"], user_us, kernel_us = round_trips(proc, binary, port, n, seconds)
            if n == 256:
                row["user_us"], row["kernel_us"], row["us_per_rt"] = user_us, kernel_us, user_us + kernel_us
        wait_quiet(proc.pid, fresh)
        row["conn"], _ = load(binary, port, "conn", 16, seconds)
    finally:
        stop(proc)
    if name == "iterative":
        row["idle"], row["kib"] = 0, float("nan")  # it holds one client at a time; the rest wait in the backlog
        return row
    proc = start(name, port + 1)
    try:
        row["idle"], row["kib"] = idle(proc, port + 1, min(idle_count, IDLE_CAP.get(name, idle_count)))
    finally:
        stop(proc)
    return row


def taking_turns(names: list[str], binary: Path, port: int, seconds: float, rounds: int) -> dict[str, list]:
    """Round trips at 256 connections again, the servers taking turns ``rounds`` times: (rate, user µs, kernel µs)
    per turn. Over a run the machine drifts (kernel time per round trip moves by a tenth here), and one measurement
    per server, minutes apart, puts that drift into the ratios; turns taken side by side spread it over everyone."""
    turns: dict[str, list] = {name: [] for name in names}
    for _ in range(rounds):
        for i, name in enumerate(names):
            proc = start(name, port + i)
            try:
                wait_quiet(proc.pid, sockets_held(proc.pid))
                turns[name].append(round_trips(proc, binary, port + i, 256, seconds))
            finally:
                stop(proc)
    return turns


def turns_table(turns: dict[str, list], seconds: float) -> str:
    rounds = max(len(v) for v in turns.values())
    lines = ["", f"Taking turns: round trips at 256 connections, {rounds} rounds of {seconds:g} s, the servers one "
             "after another in each round (medians):", "",
             "| server | round trips/s | CPU µs per round trip, user / kernel |", "| --- | ---: | ---: |"]  # fmt: skip
    for name, values in turns.items():
        rate, user, kernel = (statistics.median(v[k] for v in values) for k in range(3))
        lines.append(f"| {name} | {fmt(rate)} | {fmt(user, 2, grouped=False)} / {fmt(kernel, 2, grouped=False)} |")
    if "eventloop" in turns:
        lines.append("")
        for peer in PEERS:
            if peer not in turns:
                continue
            ratios = sorted(a[0] / b[0] for a, b in zip(turns["eventloop"], turns[peer], strict=True) if b[0])
            if ratios:
                lines.append(
                    f"- eventloop / {peer}, round trips at 256 connections, turn by turn: median "
                    f"**{statistics.median(ratios):.2f}x** (from {ratios[0]:.2f}x to {ratios[-1]:.2f}x)"
                )
    return "\n".join(lines)


def instructions_per_round_trip(name: str, binary: Path, port: int, seconds: float) -> float:
    """User-space instructions the server spends per round trip at 256 connections, counted by callgrind.

    Unlike a rate, an instruction count does not move when something else shares the machine, so it compares the
    servers' own work steadily (the kernel's share, about the same for all of them, is not in it)."""
    out = BUILD / f"callgrind.{name}.out"
    for old in BUILD.glob(f"callgrind.{name}.out*"):
        old.unlink()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *server_command(name, port)]
    proc = start_server(cmd, lambda: port_open(port), cores=None, timeout=120, settle=1)
    try:
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60)
        result = subprocess.run(
            [str(binary), "127.0.0.1", str(port), "rt", "256", str(seconds)], capture_output=True, text=True,
            timeout=seconds + 60,
        )  # fmt: skip
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60)
    finally:
        stop(proc, signal.SIGINT, wait=60)
    round_trips = int(result.stdout.split()[1]) if result.stdout else 0
    dumps = sorted(BUILD.glob(f"callgrind.{name}.out.*"))
    if not dumps or not round_trips:
        return float("nan")
    for line in dumps[0].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / round_trips
    return float("nan")


def table(rows: list[dict], seconds: float) -> str:
    lines = [
        "| server | round trips/s, 1 conn | 16 conns | 256 conns | CPU µs per round trip (256) "
        "| of it user / kernel | new conns/s | idle held | KiB per idle conn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {fmt(r['rt1'])} | {fmt(r['rt16'])} | {fmt(r['rt256'])} "
            f"| {fmt(r['us_per_rt'], 1, grouped=False)} "
            f"| {fmt(r['user_us'], 2, grouped=False)} / {fmt(r['kernel_us'], 2, grouped=False)} "
            f"| {fmt(r['conn'])} | {fmt(r['idle'])} | {fmt(r['kib'], 2, grouped=False)} |"
        )
    by = {r["server"]: r for r in rows}
    lines.append("")
    if "eventloop" in by:
        for peer in PEERS:
            if peer in by and by[peer]["rt256"]:
                lines.append(
                    f"- eventloop / {peer}, round trips at 256 connections: "
                    f"**{ratio(by['eventloop']['rt256'], by[peer]['rt256'])}** "
                    f"(by server CPU per round trip: {ratio(by[peer]['us_per_rt'], by['eventloop']['us_per_rt'])}; "
                    f"by user-space CPU, the engine's own work: "
                    f"{ratio(by[peer]['user_us'], by['eventloop']['user_us'])})"
                )
        own = by["eventloop"]
        ceilings = [
            f"{by[peer]['us_per_rt'] / own['kernel_us']:.2f}x {peer}"
            for peer in PEERS
            if peer in by and by[peer]["us_per_rt"] and own["kernel_us"]
        ]
        if own["kernel_us"] and own["us_per_rt"]:
            lines.append(
                f"- the kernel's share of eventloop's CPU per round trip: {own['kernel_us'] / own['us_per_rt']:.0%} "
                "(TCP over loopback: each send also runs the client socket's receive path on the server's core)."
                + (
                    " An engine doing no user-space work at all, with the same kernel work, would reach "
                    + ", ".join(ceilings)
                    + " at most."
                    if ceilings
                    else ""
                )
            )
    for name in ("eventloop", "prefork"):
        if name in by and by[name]["idle"]:
            lines.append(f"- {name}: {by[name]['idle']:,} idle connections at {by[name]['kib']:.2f} KiB each")
    lines.append("")
    lines.append(
        f"Server pinned to core {SERVER_CORE}, load generator (bench/echoload.c) to core {CLIENT_CORE}; "
        f"{seconds:g} s per figure; 64-byte messages; pool has 32 threads, prefork 1 worker (one core). "
        "Memory is PSS of the server's process tree, so forked children's shared pages count once."
    )
    return "\n".join(lines)


def instructions_table(counted: list[tuple[str, float]]) -> str:
    lines = ["", "User-space instructions per round trip at 256 connections (callgrind; steady under load):", "",
             "| server | instructions per round trip |", "| --- | ---: |"]  # fmt: skip
    lines += [f"| {name} | {fmt(value)} |" for name, value in counted]
    by_name = dict(counted)
    ratios = [f"- {peer} / eventloop, instructions per round trip: **{ratio(by_name[peer], by_name['eventloop'])}**"
              for peer in PEERS if "eventloop" in by_name and peer in by_name]  # fmt: skip
    return "\n".join(lines + ([""] + ratios if ratios else []))


def plot(plt: Any, rows: list[dict]) -> Any:
    """The report's figure, drawn with pyplot ``plt`` (None: nothing to draw)."""
    names = [r["server"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [(f"{n} conn", [r[f"rt{n}"] for r in rows]) for n in (1, 16, 256)]
    grouped_bars(axes[0], names, series, ylabel="echo round trips / s", title="round trips", width=0.27)
    axes[1].bar(names, [r["conn"] for r in rows], color="tab:orange")
    axes[1].set_xticks(range(len(names)), names, rotation=30)
    axes[1].set_ylabel("connections / s")
    axes[1].set_title("new connection per exchange")
    return fig


def main() -> int:
    parser = parser_for(__doc__, MODELS + PEERS)
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold (default 10000)")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts (valgrind)")
    parser.add_argument("--rounds", type=int, default=3, help="turns at 256 connections for eventloop, prefork and "
                        "the peers, taken side by side (default 3; 0: none)")  # fmt: skip
    parser.add_argument("--callgrind-seconds", type=float, default=10.0, help="load under callgrind (default 10)")
    args = parse(parser, quick={"seconds": 0.3, "idle": 50, "callgrind_seconds": 0.5, "rounds": 1})
    need_two_cores("load")
    raise_nofile()
    binary = build_c("echoload")
    names = args.only or MODELS + PEERS
    rows = []
    for i, name in enumerate(names):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, binary, PORT + 10 * i, args.seconds, args.idle))
    compared = [n for n in names if n in ("eventloop", "prefork", *PEERS)]
    turns = {}
    if args.rounds and len(compared) > 1:
        print(f"bench: {args.rounds} rounds of turns at 256 connections ...", file=sys.stderr, flush=True)
        turns = taking_turns(compared, binary, PORT + 400, args.seconds, args.rounds)
    counted = []
    if not args.no_callgrind and shutil.which("valgrind"):
        for i, name in enumerate(n for n in names if n in CALLGRIND):
            print(f"bench: {name} under callgrind ...", file=sys.stderr, flush=True)
            counted.append((name, instructions_per_round_trip(name, binary, PORT + 500 + i, args.callgrind_seconds)))
    body = (
        table(rows, args.seconds)
        + ("\n" + turns_table(turns, args.seconds) if turns else "")
        + ("\n" + instructions_table(counted) if counted else "")
    )
    write_report(args.out, "echo", "echo", body, lambda plt: plot(plt, rows))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # a server that would not start, or a port someone else holds: one line
        sys.exit(f"bench: {exc}")
