"""What every benchmark here shares, so that each script keeps only what is particular to its protocol.

* servers: started pinned to a core in a session of their own (so a stop reaches the whole process group), ready
  when a probe says so, stopped by process group;
* the server's process tree read from /proc: CPU time, memory (PSS, so forked children's shared pages count once)
  and the sockets it holds -- and, from those, the memory per idle connection;
* the report: the machine line, number formats, ratios, matplotlib (optional), and the files results/NAME.md and
  results/NAME.png (or under ``--out``);
* the options every script has: ``--quick`` (a smoke run in seconds; its figures mean nothing) and ``--out``;
* the load generators written in C here (echoload.c, dnsload.c), compiled once into bench/.build.
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
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
RESULTS = HERE / "results"
#: The server under test runs on one core, the load generator on the other: they never share one.
SERVER_CORE, CLIENT_CORE = 0, 1


# -- the script's options and checks ------------------------------------------------------------------------------
def parser_for(doc: str | None, servers: list[str], only: str = "measure only these") -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--only`` (some of ``servers``), ``--quick`` and
    ``--out``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=servers, help=only)
    quick = "the shortest settings: checks that the script runs; its figures mean nothing"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"folder for the report (default {RESULTS})")
    return parser


def parse(parser: argparse.ArgumentParser, quick: dict[str, Any]) -> argparse.Namespace:
    """Parse the command line; with ``--quick`` the defaults become ``quick`` (an option given still wins)."""
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args()
    return args


def need_two_cores(load: str) -> None:
    if (os.cpu_count() or 1) < 2:
        sys.exit(f"bench: needs two cores (server on one, {load} on the other)")


def sbin(command: str) -> str | None:
    """A program's path: on PATH, or in /usr/sbin (which a user's PATH may lack); None when it is not installed."""
    return shutil.which(command) or (f"/usr/sbin/{command}" if os.path.exists(f"/usr/sbin/{command}") else None)


def need_tool(command: str, package: str) -> None:
    if sbin(command) is None:
        sys.exit(f"bench: {command} is needed: apt-get install {package}")


def nsd_command(work: Path, port: int, zone: str, server: str = "") -> list[str] | None:
    """NSD on 127.0.0.1:``port``, its state and log in ``work``, RRL off: nsd.conf written there with ``zone`` as its
    zone clause and ``server`` (the benchmark's own lines) added to its server clause; None when NSD is missing."""
    path = sbin("nsd")
    if path is None:
        return None
    (work / "nsd.conf").write_text(f"""server:
  ip-address: 127.0.0.1@{port}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{work}"
  database: ""
  pidfile: "{work}/nsd.pid"
  xfrdfile: "{work}/xfrd.state"
  xfrdir: "{work}"
  zonelistfile: "{work}/zone.list"
  logfile: "{work}/nsd.log"
  rrl-ratelimit: 0
{server}remote-control:
  control-enable: no
zone:
{zone}""")
    return [path, "-d", "-c", str(work / "nsd.conf")]


def named_command(work: Path, port: int, rest: str, options: str = "") -> list[str] | None:
    """BIND's named on 127.0.0.1:``port``, its files in ``work``, authoritative only, sending no NOTIFY: named.conf
    written there with ``options`` added to its options and ``rest`` (keys, logging, the zone) after them; None when
    BIND is missing."""
    path = sbin("named")
    if path is None:
        return None
    (work / "named.conf").write_text(f"""options {{
  directory "{work}";
  pid-file "{work}/named.pid";
  session-keyfile "{work}/session.key";
  managed-keys-directory "{work}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
{options}  dnssec-validation no;
  notify no;
}};
controls {{ }};
{rest}""")
    return [path, "-g", "-n", "1", "-c", str(work / "named.conf")]


def build_c(name: str) -> Path:
    """bench/NAME.c compiled into bench/.build/NAME (again only when the source is newer); a missing compiler or a
    failed build is one plain line."""
    binary = BUILD / name
    source = HERE / f"{name}.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            sys.exit(f"bench: a C compiler (cc) is needed for {name}, the load generator: apt-get install gcc")
        built = subprocess.run([cc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True)
        if built.returncode:
            first = next(iter(built.stderr.strip().splitlines()), "no message")
            sys.exit(f"bench: {source.name} does not compile: {first}")
    return binary


def raise_nofile() -> None:
    """As many open files as the hard limit allows (up to 65536): idle-connection figures hold thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def wrk_seconds(seconds: float) -> int:
    """wrk takes whole seconds (``-d0.3s`` is a usage error): the duration it will really run."""
    return max(1, round(seconds))


# -- starting and stopping servers --------------------------------------------------------------------------------
def port_open(port: int) -> bool:
    """A probe: something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_ready(ready: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``ready`` until it is true (True), the time is up or ``proc`` has ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if ready():
            return True
        time.sleep(0.05)
    return False


def pin_to(cores: set[int] | None) -> Callable[[], None]:
    """A preexec_fn: the child on ``cores`` (None: wherever), with many open files, in a session of its own."""

    def pin() -> None:
        if cores is not None:
            os.sched_setaffinity(0, cores)
        raise_nofile()
        os.setsid()

    return pin


def start_server(
    command: Sequence[str],
    ready: Callable[[], bool],
    *,
    cwd: Path = ROOT,
    cores: Collection[int] | None = (SERVER_CORE,),
    logs: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    timeout: float = 20,
    settle: float = 0.3,
) -> subprocess.Popen:
    """Start ``command`` pinned to ``cores`` and return once ``ready()`` (then ``settle`` seconds more, so its first
    figure does not catch it still importing). Its output goes to ``logs[0]`` (or nowhere); if it does not become
    ready it is stopped and RuntimeError carries the last lines of every log. Something that already answers before
    it starts (a leftover server on the port) is a RuntimeError too: its figures would be someone else's."""
    if ready():
        raise RuntimeError(f"something already answers where {Path(command[0]).name} is to listen: stop it first")
    out = open(logs[0], "ab") if logs else subprocess.DEVNULL  # noqa: SIM115 (closed once the child has it)
    try:
        proc = subprocess.Popen(list(command), cwd=cwd, preexec_fn=pin_to(None if cores is None else set(cores)),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)  # fmt: skip
    finally:
        if logs:
            out.close()
    try:
        up = wait_ready(ready, timeout, proc)
    except BaseException:
        stop(proc)
        raise
    if not up:
        stop(proc)
        tail = " / ".join(line for log in logs if log.exists()
                          for line in log.read_text(errors="replace").strip().splitlines()[-3:])  # fmt: skip
        raise RuntimeError(f"{Path(command[0]).name} did not start" + (f": {tail}" if tail else ""))
    time.sleep(settle)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """``sig`` to the server's process group (it runs in a session of its own); SIGKILL if it is not gone in
    ``wait`` seconds."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(wait)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_pinned(command: Sequence[str], cores: set[int] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` of a load generator on ``cores`` (the client core unless told)."""
    cores = {CLIENT_CORE} if cores is None else cores
    return subprocess.run(["taskset", "-c", ",".join(map(str, sorted(cores))), *command], **kwargs)


# -- the server's process tree, from /proc ------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for kid in (task / "children").read_text().split():
                pids.extend(process_tree(int(kid)))
        except OSError:
            pass
    return pids


def tree_kib(pid: int, file: str, field: str) -> int:
    """The sum over the tree of one kB figure of /proc/PID/``file`` (its line starting ``field``); a process that
    ended while the tree was read counts 0."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/{file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def pss_kib(pid: int) -> int:
    """Proportional memory of the tree: a page shared by n processes counts 1/n in each, so once in the sum."""
    return tree_kib(pid, "smaps_rollup", "Pss:")


def rss_kib(pid: int) -> int:
    """Resident memory of the tree, a shared page counted in every process that maps it."""
    return tree_kib(pid, "status", "VmRSS:")


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


def cpu_seconds(pid: int) -> float:
    """User+system CPU of the tree so far, the children it has already reaped included (a fork server's)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the tree so far, the children it has already reaped included."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        user += int(fields[11]) / tick  # utime
        system += int(fields[12]) / tick  # stime
        if p == pid:
            user += int(fields[13]) / tick  # cutime: children already reaped
            system += int(fields[14]) / tick  # cstime
    return user, system


def wait_quiet(pid: int, sockets: int, timeout: float = 5) -> None:
    """Wait until the server holds no more than ``sockets`` sockets (those it held when it was fresh): the previous
    figure's connections are closed and, under fork, their children gone -- their teardown would otherwise be
    charged to the next figure (fork's new-connection rate started at 0 right after 256 connections closed)."""
    wait_ready(lambda: sockets_held(pid) <= sockets, timeout)


def micros_per(seconds: float, count: float) -> float:
    """CPU µs per unit of work (nan when no work was done): steadier than rates when the machine is shared."""
    return seconds / count * 1e6 if count else float("nan")


def idle_memory(
    pid: int,
    count: int,
    open_connections: Callable[[list[socket.socket], Callable[[], int]], int],
    *,
    settle: float = 10.0,
    pause: float = 0.5,
) -> tuple[int, float]:
    """How many idle connections the server holds, and its KiB of memory (PSS) per connection.

    ``open_connections(socks, held)`` opens up to ``count`` connections from this process, pinned to the client
    core, appending each socket to ``socks`` (closed here, whatever happens) and returns how many it brought to the
    state to measure (connected, answered, handshaken); ``held()`` is how many sockets the server holds beyond
    those it had before, for openers that pace themselves by it."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CORE})
    base = sockets_held(pid)
    time.sleep(0.3)
    before = pss_kib(pid)
    socks: list[socket.socket] = []
    try:
        target = min(count, open_connections(socks, lambda: sockets_held(pid) - base))
        deadline = time.monotonic() + settle
        while sockets_held(pid) - base < target and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(pause)
        held = min(target, sockets_held(pid) - base)
        after = pss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
        os.sched_setaffinity(0, affinity)
    return held, (after - before) / held if held > 0 else float("nan")


# -- the report ---------------------------------------------------------------------------------------------------
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


def fmt(value: float, digits: int = 0, grouped: bool = True) -> str:
    """A figure for a table: thousands separated (unless not ``grouped``), ``-`` for nan (not measured)."""
    return "-" if value != value else f"{value:{',' if grouped else ''}.{digits}f}"


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as ``1.23x``; ``-`` when there is no base or no value."""
    return f"{value / base:.2f}x" if base and value == value else "-"


def pyplot() -> Any | None:
    """matplotlib.pyplot drawing to files (Agg), or None when matplotlib is not installed (no plot then)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def grouped_bars(
    ax: Any,
    names: list[str],
    series: list[tuple[str, list[float]]],
    *,
    ylabel: str,
    title: str,
    rotation: int = 30,
    width: float | None = None,
) -> list:
    """A bar chart on ``ax``: a group of bars per server name, one bar per series (label, values) side by side,
    with a legend. Returns the bar containers (one per series), for labels."""
    width = width or 0.8 / max(1, len(series))
    bars = []
    for i, (label, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        bars.append(ax.bar(xs, values, width, label=label))
    ax.set_xticks(range(len(names)), names, rotation=rotation)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return bars


def write_report(out: Path, stem: str, title: str, body: str, draw: Callable[[Any], Any] | None = None) -> None:
    """``out``/STEM.md (the title, the machine, the body), printed too, and ``out``/STEM.png: the figure
    ``draw(pyplot)`` returns (None: no plot; nor without matplotlib)."""
    out.mkdir(parents=True, exist_ok=True)
    text = f"# sockhop {title} benchmark\n\n{machine()}\n\n{body}\n"
    (out / f"{stem}.md").write_text(text)
    plt = pyplot() if draw is not None else None
    fig = draw(plt) if draw is not None and plt is not None else None
    if fig is not None:
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=100)
        plt.close(fig)
        text += f"\nplot: {out / f'{stem}.png'}\n"
    print(text)
