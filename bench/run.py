#!/usr/bin/env python3
"""Measure every sockhop model and the peers in one run, and write a markdown table and a PNG plot.

The server under test is pinned to core 0, the load generator (bench/echoload.c, built here with cc) to core 1,
so they never share a core. For each server:

* echo round trips per second with 1, 16 and 256 concurrent connections (64-byte messages);
* new connections per second (connect, one exchange, close; 16 at a time) -- where fork pays its price;
* idle connections held, and the server's memory per connection (PSS, so forked children's shared pages are
  counted once).

Peers in the same run: the same echo on asyncio's default loop and on uvloop. Only ratios measured in one run
count: absolute figures move with the machine and the day.

    make bench                         # everything, default durations
    python bench/run.py --seconds 1 --idle 1000 --only eventloop asyncio   # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
RESULTS = HERE / "results"
SERVER_CORE, CLIENT_CORE = 0, 1
PORT = 17700

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
PEERS = ["asyncio", "uvloop"]
# Holding 10,000 idle clients as processes or threads is what those models cannot afford; they are measured at a
# smaller count and the table says so (the per-connection figure is what compares).
IDLE_CAP = {"fork": 1000, "thread": 2000}
CALLGRIND = ["eventloop", "asyncio", "uvloop"]  # single-process servers, where callgrind sees all the work


def build_load_generator() -> Path:
    binary = BUILD / "echoload"
    source = HERE / "echoload.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            sys.exit("bench: a C compiler (cc) is needed for the load generator: apt-get install gcc")
        subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def server_command(name: str, port: int) -> list[str]:
    py = sys.executable
    if name in PEERS:
        cmd = [py, str(HERE / "peers" / "asyncio_echo.py"), "--port", str(port)]
        return cmd + (["--uvloop"] if name == "uvloop" else [])
    workers = {"pool": "32", "prefork": "1"}.get(name, "1")
    return [
        py, "-m", "sockhop", "serve", "echo", "--model", name, "--listen", f"127.0.0.1:{port}",
        "--workers", workers, "--max-connections", "20000", "--idle-timeout", "300", "--grace", "1",
    ]  # fmt: skip


def start(name: str, port: int) -> subprocess.Popen:
    def pin() -> None:
        os.sched_setaffinity(0, {SERVER_CORE})
        raise_nofile()
        os.setsid()

    proc = subprocess.Popen(
        server_command(name, port), cwd=ROOT, preexec_fn=pin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.3)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def load(binary: Path, port: int, mode: str, n: int, seconds: float) -> float:
    out = subprocess.run(
        ["taskset", "-c", str(CLIENT_CORE), str(binary), "127.0.0.1", str(port), mode, str(n), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    fields = out.stdout.split()
    return float(fields[3]) if len(fields) >= 4 else 0.0


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for kid in (task / "children").read_text().split():
                pids.extend(process_tree(int(kid)))
        except OSError:
            pass
    return pids


def pss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def sockets_held(pid: int) -> int:
    count = 0
    for p in process_tree(pid):
        try:
            for fd in Path(f"/proc/{p}/fd").iterdir():
                try:
                    count += os.readlink(fd).startswith("socket:")
                except OSError:
                    pass
        except OSError:
            pass
    return count


def idle(proc: subprocess.Popen, port: int, count: int, timeout: float = 60) -> tuple[int, float]:
    """Open ``count`` idle connections (nonblocking connects, in batches so the backlog is never the limit), wait
    until the server holds them, and return (held, KiB of server memory per connection)."""
    os.sched_setaffinity(0, {CLIENT_CORE})
    base_sockets = sockets_held(proc.pid)
    time.sleep(0.3)
    before = pss_kib(proc.pid)
    socks: list[socket.socket] = []
    held = 0
    try:
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
            while time.monotonic() < deadline and sockets_held(proc.pid) - base_sockets < target - 50:
                time.sleep(0.05)
        settle = time.monotonic() + 5
        while time.monotonic() < settle and sockets_held(proc.pid) - base_sockets < count:
            time.sleep(0.1)
        time.sleep(0.5)
        held = sockets_held(proc.pid) - base_sockets
        after = pss_kib(proc.pid)
    finally:
        for s in socks:
            s.close()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
    return held, (after - before) / held if held > 0 else float("nan")


def cpu_seconds(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if p == pid:
            total += (int(fields[13]) + int(fields[14])) / tick  # cutime, cstime: children already reaped
    return total


def measure(name: str, binary: Path, port: int, seconds: float, idle_count: int) -> dict:
    row: dict = {"server": name}
    proc = start(name, port)
    try:
        for n in (1, 16, 256):
            cpu = cpu_seconds(proc.pid)
            row[f"rt{n}"] = load(binary, port, "rt", n, seconds)
            if n == 256:
                # Server CPU per round trip: steadier than rates when something else shares the machine.
                spent = cpu_seconds(proc.pid) - cpu
                row["us_per_rt"] = spent / (row["rt256"] * seconds) * 1e6 if row["rt256"] else float("nan")
        row["conn"] = load(binary, port, "conn", 16, seconds)
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


def instructions_per_round_trip(name: str, binary: Path, port: int, seconds: float) -> float:
    """User-space instructions the server spends per round trip at 256 connections, counted by callgrind.

    Unlike a rate, an instruction count does not move when something else shares the machine, so it compares the
    servers' own work steadily (the kernel's share, about the same for all of them, is not in it)."""
    out = BUILD / f"callgrind.{name}.out"
    for old in BUILD.glob(f"callgrind.{name}.out*"):
        old.unlink()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *server_command(name, port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60)
        result = subprocess.run(
            [str(binary), "127.0.0.1", str(port), "rt", "256", str(seconds)], capture_output=True, text=True,
            timeout=seconds + 60,
        )  # fmt: skip
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    round_trips = int(result.stdout.split()[1]) if result.stdout else 0
    dumps = sorted(BUILD.glob(f"callgrind.{name}.out.*"))
    if not dumps or not round_trips:
        return float("nan")
    for line in dumps[0].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / round_trips
    return float("nan")


def fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.0f}"


def table(rows: list[dict], seconds: float) -> str:
    lines = [
        "| server | round trips/s, 1 conn | 16 conns | 256 conns | CPU µs per round trip (256) | new conns/s "
        "| idle held | KiB per idle conn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {fmt(r['rt1'])} | {fmt(r['rt16'])} | {fmt(r['rt256'])} | {r['us_per_rt']:.1f} "
            f"| {fmt(r['conn'])} "
            f"| {fmt(r['idle'])} | {r['kib']:.2f} |".replace("| nan |", "| - |")
        )
    by = {r["server"]: r for r in rows}
    lines.append("")
    if "eventloop" in by:
        for peer in PEERS:
            if peer in by and by[peer]["rt256"]:
                lines.append(
                    f"- eventloop / {peer}, round trips at 256 connections: "
                    f"**{by['eventloop']['rt256'] / by[peer]['rt256']:.2f}x** "
                    f"(by server CPU per round trip: {by[peer]['us_per_rt'] / by['eventloop']['us_per_rt']:.2f}x)"
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


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["server"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.27
    for i, n in enumerate((1, 16, 256)):
        axes[0].bar([x + (i - 1) * width for x in range(len(names))], [r[f"rt{n}"] for r in rows], width,
                    label=f"{n} conn")  # fmt: skip
    axes[0].set_xticks(range(len(names)), names, rotation=30)
    axes[0].set_ylabel("echo round trips / s")
    axes[0].legend()
    axes[0].set_title("round trips")
    axes[1].bar(names, [r["conn"] for r in rows], color="tab:orange")
    axes[1].set_xticks(range(len(names)), names, rotation=30)
    axes[1].set_ylabel("connections / s")
    axes[1].set_title("new connection per exchange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {os.uname().release}, Python {sys.version.split()[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold (default 10000)")
    parser.add_argument("--only", nargs="+", choices=MODELS + PEERS, help="measure only these")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts (valgrind)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs two cores (server on one, load on the other)")
    raise_nofile()
    binary = build_load_generator()
    names = args.only or MODELS + PEERS
    rows = []
    for i, name in enumerate(names):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, binary, PORT + 10 * i, args.seconds, args.idle))
    counted = []
    if not args.no_callgrind and shutil.which("valgrind"):
        for i, name in enumerate(n for n in names if n in CALLGRIND):
            print(f"bench: {name} under callgrind ...", file=sys.stderr, flush=True)
            counted.append((name, instructions_per_round_trip(name, binary, PORT + 500 + i, 10.0)))
    RESULTS.mkdir(exist_ok=True)
    text = f"# sockhop echo benchmark\n\n{machine()}\n\n{table(rows, args.seconds)}\n"
    if counted:
        text += "\nUser-space instructions per round trip at 256 connections (callgrind; steady under load):\n\n"
        text += "| server | instructions per round trip |\n| --- | ---: |\n"
        text += "".join(f"| {name} | {fmt(value)} |\n" for name, value in counted)
        by_name = dict(counted)
        for peer in PEERS:
            if "eventloop" in by_name and peer in by_name:
                ratio = by_name[peer] / by_name["eventloop"]
                text += f"\n- {peer} / eventloop, instructions per round trip: **{ratio:.2f}x**"
        text += "\n"
    (RESULTS / "echo.md").write_text(text)
    if plot(rows, RESULTS / "echo.png"):
        text += f"\nplot: {RESULTS / 'echo.png'}\n"
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
