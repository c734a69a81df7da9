#!/usr/bin/env python3
"""DNS: sockhop's name server under each model that serves UDP, and BIND, NSD, Knot and dnslib's server, in one
run, on the same zone. A markdown table and a PNG, each figure also as a ratio to NSD.

The server under test is pinned to core 0 and the load generator to core 1 (100 queries outstanding, no rate cap:
a closed loop at full speed). Three query files, each run in turn:

* ``exist``: names that exist (A, AAAA, MX, TXT) -- repeated questions, so sockhop answers from its reply cache;
* ``mixed``: a third NXDOMAIN, a third wildcard or CNAME, a third plain answers;
* ``tcp``: the ``exist`` file over TCP (dnsperf ``-m tcp``).

Over UDP the load generator is bench/dnsload.c (built here with cc), not dnsperf: dnsperf sat at ~99 % of its core
against NSD, Knot and every sockhop model, so its UDP figures were dnsperf's own cap, not the servers' (NSD: 190,000
queries/s with dnsperf at 99 % and NSD at 87 %; 260,000 with dnsload at 72 % and NSD at 99 %). dnsload sends the
queries dnsperf sends (RD set, no EDNS) from 4 sockets, in batches (sendmmsg with UDP segmentation, recvmmsg),
checks every reply (a response, to the question asked) and counts only NOERROR and NXDOMAIN. dnsperf still drives
``tcp``.

Per server and file: queries per second, lost queries (no reply within 1 s), the server's CPU per answered query
(steadier than rates when something else shares the machine), the server's CPU share and the load generator's own
(if that nears 100 %, the load generator is the cap). ``prefork-2`` runs 2 workers on both cores with the load
generator sharing them, as the issue asks. NSD runs with ``rrl-ratelimit: 0``: its response rate limiting would
otherwise drop queries under a benchmark's load.

    make bench                                       # everything (with the echo bench)
    python bench/dns.py --seconds 1 --only eventloop nsd   # a quick look
    python bench/dns.py --quick --out /tmp/bench     # a smoke run: the script works (figures mean nothing)

Then the DNSSEC and rate-limiting figures (issue 16), in a second table (``--dnssec`` runs only those):

* ``DO=1, pre-signed``: the zone signed by ldns-signzone (NSEC, ECDSA P-256), the ``exist`` file with the DO bit
  (dnsload -D), NSD and sockhop serving the same file;
* ``online signing``: Knot with its ``onlinesign`` module and sockhop with ``--sign`` (both ECDSAP256SHA256), a
  mixed file whose third NXDOMAIN are names never asked before (100,000 distinct lines), with DO;
* ``RRL``: sockhop (eventloop) on ``exist`` with ``--rrl-rate 0`` and with RRL on at a rate no client reaches (the
  cost of counting alone);
* ``flood``: sockhop with RRL at its default while dnsload floods it from 127.0.9.1 with questions for an 800-byte
  TXT (2,000 outstanding, 0.2 s timeout): the flood's bytes in and out, and the answers/s of a client on 127.0.0.1
  (exempt with ``--rrl-exempt``, so it measures the server's capacity left) with and without the flood. The flooder
  runs on the client's core, leaving the server its own: with two cores, the client then has half of one while the
  flood runs, so its CPU share and the server's are reported beside its rate -- a server short of CPU is the
  server's cost, a client short of CPU is the machine's.

Peers that are not installed are skipped with a note: ``apt-get install bind9 nsd knot dnsperf ldnsutils`` and
``pip install dnslib`` (the ``bench`` extra) bring them.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (  # noqa: E402  (bench/common.py: what every benchmark shares)
    CLIENT_CORE,
    SERVER_CORE,
    build_c,
    cpu_seconds,
    fmt,
    grouped_bars,
    micros_per,
    named_command,
    need_tool,
    need_two_cores,
    nsd_command,
    parse,
    parser_for,
    ratio,
    run_pinned,
    sbin,
    start_server,
    stop,
    write_report,
)

# this file is bench/dns.py: run as a script, its folder comes first on sys.path and would hide dnspython's `dns`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

PORT = 17800
OUTSTANDING = 100

MODELS = ["iterative", "pool", "eventloop", "prefork", "prefork-2"]
PEERS = ["nsd", "bind", "knot", "dnslib"]
FILES = ["exist", "mixed", "tcp"]

ZONE = """\
$ORIGIN example.test.
$TTL 3600
@       IN SOA  ns1.example.test. hostmaster.example.test. 2024010101 7200 3600 1209600 3600
@       IN NS   ns1.example.test.
@       IN NS   ns2.example.test.
@       IN MX   10 mail.example.test.
@       IN MX   20 mail2.example.test.
@       IN A    192.0.2.1
@       IN AAAA 2001:db8::1
@       IN TXT  "v=spf1 mx -all"
ns1     IN A    192.0.2.53
ns2     IN A    192.0.2.54
mail    IN A    192.0.2.25
mail    IN AAAA 2001:db8::25
mail2   IN A    192.0.2.26
www     IN A    192.0.2.80
www     IN AAAA 2001:db8::80
api     IN A    192.0.2.81
api     IN AAAA 2001:db8::81
cdn     IN A    192.0.2.82
cdn     IN A    192.0.2.83
shop    IN A    192.0.2.84
shop    IN MX   10 mail.example.test.
blog    IN A    192.0.2.85
blog    IN TXT  "hello world"
host1   IN A    192.0.2.101
host2   IN A    192.0.2.102
host3   IN AAAA 2001:db8::103
_dmarc  IN TXT  "v=DMARC1; p=none"
alias   IN CNAME www
alias2  IN CNAME api
*.users IN A    192.0.2.200
"""
AMPLIFIER = "".join(f'amp     IN TXT  "{i:02d}{"x" * 98}"\n' for i in range(8))  # ~900 bytes: the flood's question

EXISTING = [
    "example.test A", "example.test AAAA", "example.test MX", "example.test TXT", "www.example.test A",
    "www.example.test AAAA", "mail.example.test A", "mail.example.test AAAA", "api.example.test A",
    "api.example.test AAAA", "cdn.example.test A", "shop.example.test MX", "shop.example.test A",
    "blog.example.test A", "blog.example.test TXT", "host1.example.test A", "host2.example.test A",
    "host3.example.test AAAA", "ns1.example.test A", "mail2.example.test A",
]  # fmt: skip


def query_files(work: Path) -> dict[str, Path]:
    exist = work / "exist.queries"
    exist.write_text("".join(f"{EXISTING[i % len(EXISTING)]}\n" for i in range(1000)))
    mixed = work / "mixed.queries"
    lines = []
    for i in range(999):
        kind = i % 3
        if kind == 0:
            lines.append(f"nx{i}.example.test A")
        elif kind == 1:  # wildcard and CNAME in turn
            lines.append(
                f"u{i % 50}.users.example.test A" if i % 2 else f"alias{'2' if (i // 2) % 2 else ''}.example.test A"
            )
        else:
            lines.append(EXISTING[i % len(EXISTING)])
    mixed.write_text("\n".join(lines) + "\n")
    return {"exist": exist, "mixed": mixed, "tcp": exist}


# -- the servers ----------------------------------------------------------------------------------------------------
NSD_SERVER = "  verbosity: 0\n  rrl-whitelist-ratelimit: 0\n"


def configs(work: Path, zone: Path, port: int) -> None:
    """The peers' configuration files that server_command does not write."""
    (work / "knotdb").mkdir(exist_ok=True)
    (work / "knot.conf").write_text(f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{work}/knotdb"
log:
  - target: stderr
    any: error
zone:
  - domain: example.test
    file: "{zone}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
""")
    (work / "dnslib_server.py").write_text("""import sys, threading
from dnslib.server import DNSServer, DNSLogger
from dnslib.zoneresolver import ZoneResolver
resolver = ZoneResolver(open(sys.argv[2]).read())
quiet = DNSLogger('-request,-reply,-truncated,-error,-recv,-send,-data', prefix=False, logf=lambda s: None)
DNSServer(resolver, port=int(sys.argv[1]), address='127.0.0.1', tcp=True, logger=quiet).start_thread()
DNSServer(resolver, port=int(sys.argv[1]), address='127.0.0.1', logger=quiet).start()
""")


def server_command(name: str, work: Path, zone: Path, port: int) -> list[str] | None:
    """The command line, or None when that peer is not installed."""
    if name in ("iterative", "pool", "eventloop", "prefork", "prefork-2"):
        model = name.split("-")[0]
        workers = {"pool": "4", "prefork": "1", "prefork-2": "2"}.get(name, "1")
        return [
            sys.executable, "-m", "sockhop", "serve", "dns", str(zone), "--listen", f"127.0.0.1:{port}",
            "--model", model, "--workers", workers, "--grace", "1", "--rrl-rate", "0",  # as nsd.conf: RRL off
        ]  # fmt: skip
    if name == "nsd":
        return nsd_command(work, port, f'  name: example.test\n  zonefile: "{zone}"\n', NSD_SERVER)
    if name == "bind":
        return named_command(
            work,
            port,
            f"""\
logging {{ category default {{ null; }}; category lame-servers {{ null; }}; }};
zone "example.test" {{ type primary; file "{zone}"; }};
""",
            options="  allow-query { any; };\n",
        )
    if name == "knot":
        path = sbin("knotd")
        return None if path is None else [path, "-c", str(work / "knot.conf")]
    if name == "dnslib":
        try:
            import dnslib  # noqa: F401
        except ImportError:
            return None
        return [sys.executable, str(work / "dnslib_server.py"), str(port), str(zone)]
    raise ValueError(name)


def answers_dns(port: int) -> bool:
    """A probe: the zone's SOA comes back over UDP and over TCP."""
    try:
        dns.query.udp(dns.message.make_query("example.test", "SOA"), "127.0.0.1", port=port, timeout=0.3)
        dns.query.tcp(dns.message.make_query("example.test", "SOA"), "127.0.0.1", port=port, timeout=1)
        return True
    except (dns.exception.DNSException, OSError):  # not yet listening: timeouts, refusals
        return False


def start(command: list[str], port: int, cores: set[int], work: Path) -> subprocess.Popen:
    return start_server(command, lambda: answers_dns(port), cwd=work, cores=cores,
                        logs=[work / "server.log", work / "nsd.log"])  # fmt: skip


# -- measuring ------------------------------------------------------------------------------------------------------
def dnsload(
    binary: Path, port: int, queries: Path, seconds: float, cores: set[int] | None, extra: tuple[str, ...] = ()
) -> dict:
    """One dnsload run over UDP: answered queries/s, lost, the response codes, and dnsload's own CPU share."""
    command = [str(binary), "127.0.0.1", str(port), str(queries), f"{seconds:g}", "-q", str(OUTSTANDING), *extra]
    pinned = {SERVER_CORE, CLIENT_CORE} if cores is None else cores
    out = run_pinned(command, pinned, capture_output=True, text=True, timeout=seconds + 60)
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    if "answered" not in fields:
        print(f"bench:   dnsload: {out.stderr.strip() or 'no result'}", file=sys.stderr)
        return {"qps": 0.0, "completed": 0, "lost": 0, "codes": "-", "bad": 0, "client_cpu": float("nan")}
    wall = float(fields["seconds"])
    other, invalid = int(fields["other"]), int(fields["invalid"])
    codes = f"NOERROR {fields['noerror']}, NXDOMAIN {fields['nxdomain']}, other RCODE {other}, invalid {invalid}"
    return {
        "qps": int(fields["answered"]) / wall,
        "completed": int(fields["answered"]),
        "lost": int(fields["lost"]),
        "codes": codes,
        "bad": other + invalid,
        "client_cpu": float(fields["cpu"]) / wall,
        "bytes_out": int(fields.get("bytes_out", 0)),
        "bytes_in": int(fields.get("bytes_in", 0)),
        "truncated": int(fields.get("truncated", 0)),
    }


def dnsperf(port: int, queries: Path, seconds: float, *, tcp: bool, cores: set[int] | None) -> dict:
    """One dnsperf run: queries/s, lost, the response codes, and dnsperf's own CPU share."""
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", f"{seconds:g}"]
    command += ["-c", "1", "-q", str(OUTSTANDING), "-Q", "10000000"] + (["-m", "tcp"] if tcp else [])
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    pinned = {SERVER_CORE, CLIENT_CORE} if cores is None else cores
    out = run_pinned(command, pinned, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=seconds + 60)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    client_cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / wall
    out = out.stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(match.group(1)) if match else 0.0

    codes = re.search(r"Response codes:\s+(.*)", out)
    counts = re.findall(r"([A-Z]+) (\d+) \(", codes.group(1)) if codes else []
    return {
        "qps": number("Queries per second"),
        "completed": number("Queries completed"),
        "lost": int(number("Queries lost")),
        "codes": codes.group(1).strip() if codes else "-",
        "bad": sum(int(n) for code, n in counts if code not in ("NOERROR", "NXDOMAIN")),
        "client_cpu": client_cpu,
        "raw": out,
    }


def load(binary: Path, kind: str, port: int, queries: Path, seconds: float, cores: set[int] | None) -> dict:
    """One figure: dnsload over UDP, dnsperf over TCP."""
    if kind == "tcp":
        return dnsperf(port, queries, seconds, tcp=True, cores=cores)
    return dnsload(binary, port, queries, seconds, cores)


def measure(name: str, binary: Path, work: Path, zone: Path, files: dict, port: int, seconds: float) -> dict:
    row: dict = {"server": name}
    command = server_command(name, work, zone, port)
    if command is None:
        row["skipped"] = "not installed"
        return row
    both = name == "prefork-2"
    server_cores = {SERVER_CORE, CLIENT_CORE} if both else {SERVER_CORE}
    client_cores = None if both else {CLIENT_CORE}
    configs(work, zone, port)
    try:
        proc = start(command, port, server_cores, work)
    except RuntimeError as exc:
        row["skipped"] = str(exc)
        return row
    try:
        for kind in FILES:
            load(binary, kind, port, files[kind], min(1.0, seconds), client_cores)  # warm-up
            before, started = cpu_seconds(proc.pid), time.monotonic()
            result = load(binary, kind, port, files[kind], seconds, client_cores)
            used = cpu_seconds(proc.pid) - before
            result["us_per_query"] = micros_per(used, result["completed"])
            result["server_cpu"] = used / (time.monotonic() - started)
            row[kind] = result
    finally:
        stop(proc)
    return row


# -- reporting ------------------------------------------------------------------------------------------------------
def table(rows: list[dict], seconds: float) -> str:
    nsd = next((r for r in rows if r["server"] == "nsd" and "skipped" not in r), None)
    head = "| server |"
    rule = "| --- |"
    for kind in FILES:
        head += f" {kind} q/s | × NSD | lost | µs CPU/q | server CPU | load CPU |"
        rule += " ---: | ---: | ---: | ---: | ---: | ---: |"
    lines = [head, rule]
    notes = []
    for r in rows:
        if "skipped" in r:
            notes.append(f"- {r['server']}: skipped ({r['skipped']})")
            continue
        line = f"| {r['server']} |"
        for kind in FILES:
            m = r[kind]
            times = m["qps"] / nsd[kind]["qps"] if nsd and nsd[kind]["qps"] else float("nan")
            line += (
                f" {fmt(m['qps'])} | {fmt(times, 2)} | {m['lost']} | {fmt(m['us_per_query'], 1)} "
                f"| {fmt(m['server_cpu'] * 100)} % | {fmt(m['client_cpu'] * 100)} % |"
            )
            if m["bad"]:
                notes.append(f"- {r['server']} ({kind}): {m['bad']} replies that do not score: {m['codes']}")
        lines.append(line)
    lines.append("")
    lines += notes
    by = {r["server"]: r for r in rows if "skipped" not in r}
    if "eventloop" in by:
        ev = by["eventloop"]
        for peer, target in (("nsd", 0.7), ("bind", 1.0), ("dnslib", 20.0)):
            if peer in by and by[peer]["exist"]["qps"]:
                times = ratio(ev["exist"]["qps"], by[peer]["exist"]["qps"])
                lines.append(f"- eventloop / {peer} (exist, UDP): **{times}** (target ≥ {target:g}x)")
        if "nsd" in by and by["nsd"]["mixed"]["qps"]:
            times = ratio(ev["mixed"]["qps"], by["nsd"]["mixed"]["qps"])
            lines.append(f"- eventloop / nsd (mixed): **{times}** (target ≥ 0.5x)")
    lines.append("")
    lines.append(
        f"Server pinned to core {SERVER_CORE}, the load generator to core {CLIENT_CORE} (prefork-2: 2 workers, "
        f"both cores shared with it); {OUTSTANDING} queries outstanding, {seconds:g} s per figure after a warm-up. "
        "exist: 1000 questions for names that exist (repeated: the reply cache); mixed: a third NXDOMAIN, a third "
        "wildcard or CNAME, a third plain; both over UDP from bench/dnsload.c (4 sockets), which counts only "
        "NOERROR and NXDOMAIN replies to the question asked; tcp: exist over one TCP connection from dnsperf. "
        "µs CPU/q: the server's user+system CPU per answered query; server CPU: its share of a core (of two for "
        "prefork-2); load CPU: the load generator's own share of its core. Server near 100 % and load well under: "
        "the server was the cap; load near 100 %: the load generator was."
    )
    return "\n".join(lines)


def plot(plt: Any, rows: list[dict]) -> Any:
    """The report's figure, drawn with pyplot ``plt`` (None: nothing to draw)."""
    rows = [r for r in rows if "skipped" not in r]
    names = [r["server"] for r in rows]
    nsd = next((r for r in rows if r["server"] == "nsd"), None)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    series = [(kind, [r[kind]["qps"] for r in rows]) for kind in FILES]
    bars = grouped_bars(ax, names, series, ylabel="queries / s (labels: × NSD)",
                        title="authoritative DNS, one server core", width=0.27)  # fmt: skip
    for kind, container in zip(FILES, bars, strict=True):
        if nsd and nsd[kind]["qps"]:
            labels = [f"{r[kind]['qps'] / nsd[kind]['qps']:.2f}" for r in rows]
            ax.bar_label(container, labels=labels, fontsize=7, rotation=90, padding=2)
    return fig


# -- DNSSEC and response rate limiting (issue 16) ----------------------------------------------------------------
def signed_zone(work: Path) -> Path | None:
    """ZONE signed by ldns-signzone with a new ECDSA P-256 key (NSEC), or None without ldnsutils."""
    keygen, signzone = shutil.which("ldns-keygen"), shutil.which("ldns-signzone")
    if keygen is None or signzone is None:
        return None
    folder = work / "presigned"
    folder.mkdir(exist_ok=True)
    (folder / "unsigned").write_text(ZONE)
    key = subprocess.run([keygen, "-a", "ECDSAP256SHA256", "-k", "example.test"], cwd=folder, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    out = folder / "example.test.zone"
    subprocess.run([signzone, "-o", "example.test.", "-f", str(out), "unsigned", key], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip
    return out


def online_files(work: Path) -> dict[str, Path]:
    """The flood's question, and the online-signing mix: a third NXDOMAIN for names never asked before."""
    amp = work / "amp.queries"
    amp.write_text("amp.example.test TXT\n")
    fresh = work / "fresh.queries"
    lines = []
    for i in range(100_000):
        kind = i % 3
        if kind == 0:
            lines.append(f"nx{i}-{os.getpid()}.example.test A")
        elif kind == 1:
            lines.append(f"u{i % 50}.users.example.test A" if i % 2 else "alias.example.test A")
        else:
            lines.append(EXISTING[i % len(EXISTING)])
    fresh.write_text("\n".join(lines) + "\n")
    return {"amp": amp, "fresh": fresh}


def knot_onlinesign(work: Path, zone: Path, port: int) -> None:
    (work / "knotdb").mkdir(exist_ok=True)
    (work / "knot-sign.conf").write_text(f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{work}/knotdb"
log:
  - target: stderr
    any: error
policy:
  - id: online
    algorithm: ecdsap256sha256
    single-type-signing: on
mod-onlinesign:
  - id: online
    policy: online
zone:
  - domain: example.test
    file: "{zone}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    module: mod-onlinesign/online
""")


def sockhop_command(zone: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sockhop", "serve", "dns", str(zone), "--listen", f"127.0.0.1:{port}",
            "--model", "eventloop", "--grace", "1", *extra]  # fmt: skip


def one_figure(command: list[str] | None, work: Path, port: int, run: Any) -> dict:
    """Start a server, warm it up, take one figure with ``run()``, stop it."""
    if command is None:
        return {"skipped": "not installed"}
    try:
        proc = start(command, port, {SERVER_CORE}, work)
    except RuntimeError as exc:
        return {"skipped": str(exc)}
    try:
        before, started = cpu_seconds(proc.pid), time.monotonic()
        result = run()
        used = cpu_seconds(proc.pid) - before
        result["us_per_query"] = micros_per(used, result["completed"])
        result["server_cpu"] = used / (time.monotonic() - started)
        return result
    finally:
        stop(proc)


def dnssec_figures(binary: Path, work: Path, files: dict, seconds: float) -> list[tuple[str, str, dict]]:
    """(figure, server, result) for every DNSSEC and RRL figure."""
    figures: list[tuple[str, str, dict]] = []
    port = PORT + 50
    client = {CLIENT_CORE}
    plain = work / "example.test.zone"
    plain.write_text(ZONE + AMPLIFIER)
    extra = online_files(work)

    def udp(queries: Path, *flags: str, warm: bool = True):
        def run() -> dict:
            if warm:
                dnsload(binary, port, queries, min(1.0, seconds), client, flags)
            return dnsload(binary, port, queries, seconds, client, flags)

        return run

    presigned = signed_zone(work)
    for name in ("nsd", "eventloop"):
        port += 1
        if presigned is None:
            figures.append(("DO=1, pre-signed", name, {"skipped": "ldns-signzone not installed (ldnsutils)"}))
            continue
        configs(work, presigned, port)
        command = server_command(name, work, presigned, port)
        if name == "eventloop":
            command = sockhop_command(presigned, port, "--rrl-rate", "0")
        figures.append(("DO=1, pre-signed", name, one_figure(command, work, port, udp(files["exist"], "-D"))))

    port += 1
    knotd = sbin("knotd")
    knot_onlinesign(work, plain, port)
    command = [knotd, "-c", str(work / "knot-sign.conf")] if knotd else None
    fresh = udp(extra["fresh"], "-D", warm=False)  # a warm-up would ask the fresh names first
    figures.append(("online signing, mixed", "knot", one_figure(command, work, port, fresh)))
    port += 1
    key = work / "example.test.key"
    if not key.exists():
        subprocess.run([sys.executable, "-m", "sockhop", "dns", "keygen", "example.test", "--key", str(key)],
                       check=True, capture_output=True)  # fmt: skip
    command = sockhop_command(plain, port, "--sign", str(key), "--rrl-rate", "0")
    figures.append(("online signing, mixed", "eventloop", one_figure(command, work, port, fresh)))

    for label, rate in (("RRL off", "0"), ("RRL on, no flood", "100000000")):
        port += 1
        command = sockhop_command(plain, port, "--rrl-rate", rate)
        figures.append((label, "eventloop", one_figure(command, work, port, udp(files["exist"]))))

    port += 1
    command = sockhop_command(plain, port, "--rrl-exempt", "127.0.0.1")

    def flooded() -> dict:
        alone = dnsload(binary, port, files["exist"], seconds, client)
        flood_command = [str(binary), "127.0.0.1", str(port), str(extra["amp"]), f"{seconds + 1:g}", "-q", "2000",
                         "-t", "0.2", "-e", "-b", "127.0.9.1"]  # fmt: skip
        flood = subprocess.Popen(["taskset", "-c", str(CLIENT_CORE), *flood_command], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        during = dnsload(binary, port, files["exist"], seconds, client)
        out = flood.communicate(timeout=seconds + 60)[0]
        fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
        during["alone_qps"] = alone["qps"]
        during["alone_client_cpu"] = alone["client_cpu"]
        during["flood_in"] = int(fields.get("bytes_out", 0))  # what the flooder sent is what the server took in
        during["flood_out"] = int(fields.get("bytes_in", 0))
        during["flood_truncated"] = int(fields.get("truncated", 0))
        during["flood_answers"] = int(fields.get("answered", 0))
        return during

    figures.append(("flood from one prefix", "eventloop", one_figure(command, work, port, flooded)))
    return figures


def dnssec_table(figures: list[tuple[str, str, dict]], seconds: float) -> str:
    lines = ["| figure | server | q/s | lost | µs CPU/q | server CPU |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    notes = []
    got: dict[tuple[str, str], dict] = {}
    for figure, server, m in figures:
        if "skipped" in m:
            notes.append(f"- {figure}, {server}: skipped ({m['skipped']})")
            continue
        got[(figure, server)] = m
        lines.append(
            f"| {figure} | {server} | {fmt(m['qps'])} | {m['lost']} | {fmt(m['us_per_query'], 1)} "
            f"| {fmt(m['server_cpu'] * 100)} % |"
        )
        if m["bad"]:
            notes.append(f"- {figure}, {server}: {m['bad']} replies that do not score: {m['codes']}")
    lines += ["", *notes]

    def versus(label: str, a: tuple[str, str], b: tuple[str, str], target: float) -> None:
        if a in got and b in got and got[b]["qps"]:
            lines.append(f"- {label}: **{ratio(got[a]['qps'], got[b]['qps'])}** (target ≥ {target:g}x)")

    versus("DO=1 pre-signed, eventloop / nsd", ("DO=1, pre-signed", "eventloop"), ("DO=1, pre-signed", "nsd"), 0.7)
    versus("online signing, eventloop / knot", ("online signing, mixed", "eventloop"),
           ("online signing, mixed", "knot"), 0.5)  # fmt: skip
    versus("RRL on / off, no flood", ("RRL on, no flood", "eventloop"), ("RRL off", "eventloop"), 0.95)
    flood = got.get(("flood from one prefix", "eventloop"))
    if flood:
        lines.append(
            f"- flood from 127.0.9.1: {fmt(flood['flood_in'])} bytes in, {fmt(flood['flood_out'])} bytes out "
            f"({fmt(flood['flood_out'] / max(flood['flood_in'], 1), 2)}x; target ≤ 1), {flood['flood_answers']} "
            f"answers of which {flood['flood_truncated']} truncated (slipped); the client on 127.0.0.1: "
            f"{fmt(flood['alone_qps'])} q/s alone (its CPU {fmt(flood['alone_client_cpu'] * 100)} %), "
            f"{fmt(flood['qps'])} during the flood ({ratio(flood['qps'], flood['alone_qps'])}; its CPU "
            f"{fmt(flood['client_cpu'] * 100)} %; the server's CPU over both runs {fmt(flood['server_cpu'] * 100)} %)"
        )
    lines += ["", f"{seconds:g} s per figure; the DO figures with dnsload -D (an OPT record with DO set)."]
    return "\n".join(lines)


def main() -> int:
    parser = parser_for(__doc__, MODELS + PEERS)
    parser.add_argument("--seconds", type=float, default=10.0, help="per figure (default 10)")
    parser.add_argument("--dnssec", action="store_true", help="only the DNSSEC and rate-limiting figures")
    args = parse(parser, quick={"seconds": 0.5})
    need_two_cores("dnsload")
    if not args.dnssec:
        need_tool("dnsperf", "dnsperf")  # the tcp figures
    binary = build_c("dnsload")
    names = [] if args.dnssec else args.only or PEERS[:1] + MODELS + PEERS[1:]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sockhop-dns-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # NSD and BIND may read as another user
        zone = work / "example.test.zone"
        zone.write_text(ZONE)
        files = query_files(work)
        for i, name in enumerate(names):
            print(f"bench: dns {name} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, binary, work, zone, files, PORT + i, args.seconds))
        print("bench: dns DNSSEC and RRL ...", file=sys.stderr, flush=True)
        figures = dnssec_figures(binary, work, files, args.seconds)
    body = dnssec_table(figures, args.seconds)
    if rows:
        body = table(rows, args.seconds) + "\n\n## DNSSEC and response rate limiting\n\n" + body
    write_report(args.out, "dns", "DNS", body, (lambda plt: plot(plt, rows)) if rows else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
