#!/usr/bin/env python3
"""DNS zones that move (issue 17): a zone transfer's time against NSD's, and durable dynamic updates per second
against BIND's.

* ``axfr``: a zone of 100,000 A records served by sockhop (eventloop) and by NSD, transferred with ``dig axfr`` (the
  client on its own core, the server on the other); the best of ``--runs`` wall times, and the server's CPU for
  them. Target: sockhop's time at most 1.0x NSD's.
* ``secondary``: the same zone served by NSD, loaded by a secondary started afresh -- sockhop (``--secondary``,
  eventloop) and BIND (``type secondary``): the time from starting the secondary until it answers the zone's last
  record, the best of ``--runs``. Target: sockhop's time at most 1.5x BIND's.
* ``updates``: ``nsupdate -y`` adding ``--updates`` records one ``send`` at a time (each waits for its answer),
  against sockhop (``--allow-update key:bench``; every update synced to the journal before the answer) and BIND
  (``allow-update { key bench; }``; BIND syncs its journal per update too). Updates per second over the whole loop.
  The servers run side by side and take turns (``--rounds``), so a disk whose sync time drifts weighs on both
  alike. Target: sockhop at least 1.0x BIND.

    python bench/dnsupdate.py                       # everything
    python bench/dnsupdate.py --quick --out /tmp/b  # a smoke run: the script works (figures mean nothing)

Peers that are not installed are skipped with a note: ``apt-get install nsd bind9 bind9-dnsutils``.
"""

from __future__ import annotations

import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (  # noqa: E402  (bench/common.py: what every benchmark shares)
    CLIENT_CORE,
    SERVER_CORE,
    cpu_seconds,
    fmt,
    named_command,
    need_tool,
    nsd_command,
    parse,
    parser_for,
    ratio,
    run_pinned,
    start_server,
    stop,
    write_report,
)

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

PORT = 17900
SERVERS = ["sockhop", "nsd", "bind"]
SECRET = base64.b64encode(b"sockhop bench key for nsupdate!!").decode()
KEY = f"hmac-sha256:bench:{SECRET}"


def zone_text(records: int) -> str:
    lines = [
        "$ORIGIN example.test.",
        "$TTL 3600",
        "@ IN SOA ns1 hostmaster 1 7200 3600 1209600 3600",
        "@ IN NS ns1",
        "ns1 IN A 192.0.2.53",
    ]
    lines += [f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(records)]
    return "\n".join(lines) + "\n"


def commands(name: str, work: Path, zone: Path, port: int) -> list[str] | None:
    if name == "sockhop":
        return [
            sys.executable, "-m", "sockhop", "serve", "dns", str(zone), "--listen", f"127.0.0.1:{port}",
            "--model", "eventloop", "--rrl-rate", "0", "--tsig", f"bench:{SECRET}", "--allow-transfer", "127.0.0.1",
            "--allow-update", "key:bench",
        ]  # fmt: skip
    if name == "nsd":
        return nsd_command(work, port, f'  name: example.test\n  zonefile: "{zone}"\n  provide-xfr: 127.0.0.1 NOKEY\n')
    if name == "bind":
        return named_command(
            work,
            port,
            f"""\
key "bench" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
logging {{ category default {{ null; }}; }};
zone "example.test" {{ type primary; file "{zone}"; allow-update {{ key bench; }}; allow-transfer {{ 127.0.0.1; }}; }};
""",
        )
    raise ValueError(name)


def answers(port: int) -> bool:
    try:
        dns.query.tcp(dns.message.make_query("example.test", "SOA"), "127.0.0.1", port=port, timeout=1)
        return True
    except (dns.exception.DNSException, OSError):
        return False


def fresh_zone(work: Path, name: str, records: int) -> Path:
    """The zone file, written anew for each server (an update run changes it, and BIND keeps a journal)."""
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    zone = folder / "example.test.zone"
    zone.write_text(zone_text(records))
    return zone


def measure_axfr(name: str, work: Path, records: int, runs: int) -> dict:
    zone = fresh_zone(work, name, records)
    command = commands(name, zone.parent, zone, PORT)
    if command is None:
        return {"server": name, "skipped": f"{name} is not installed"}
    proc = start_server(command, lambda: answers(PORT), cwd=zone.parent, logs=[zone.parent / "server.log"],
                        timeout=120)  # fmt: skip
    try:
        dig = ["dig", "@127.0.0.1", "-p", str(PORT), "example.test", "AXFR", "+noall", "+stats", "+answer"]
        best = float("inf")
        cpu_before = cpu_seconds(proc.pid)
        for _ in range(runs):
            start = time.perf_counter()
            out = run_pinned(dig, capture_output=True, text=True, timeout=600)
            elapsed = time.perf_counter() - start
            if f"XFR size: {records + 4} records" not in out.stdout:
                return {"server": name, "skipped": f"the transfer was not whole: {out.stdout[-300:]}"}
            best = min(best, elapsed)
        cpu = (cpu_seconds(proc.pid) - cpu_before) / runs
    finally:
        stop(proc)
    return {"server": name, "seconds": best, "cpu": cpu}


def secondary_command(name: str, work: Path, port: int, primary: int) -> list[str] | None:
    if name == "sockhop":
        return [
            sys.executable, "-m", "sockhop", "serve", "dns", "--secondary", f"example.test@127.0.0.1:{primary}",
            "--listen", f"127.0.0.1:{port}", "--model", "eventloop", "--rrl-rate", "0",
        ]  # fmt: skip
    return named_command(
        work,
        port,
        f"""\
logging {{ category default {{ null; }}; }};
zone "example.test" {{ type secondary; primaries port {primary} {{ 127.0.0.1; }}; file "{work}/example.test.db"; }};
""",
    )


def serves_last(port: int, records: int) -> bool:
    try:
        query = dns.message.make_query(f"h{records - 1}.example.test", "A")
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
    except (dns.exception.DNSException, OSError):
        return False


def measure_secondary(names: list[str], work: Path, records: int, runs: int) -> list[dict]:
    """NSD serves the zone; each secondary is started ``runs`` times, afresh, and timed until it answers."""
    zone = fresh_zone(work, "nsd-primary", records)
    command = commands("nsd", zone.parent, zone, PORT)
    if command is None:
        return [{"server": name, "skipped": "nsd (the primary) is not installed"} for name in names]
    primary = start_server(command, lambda: answers(PORT), cwd=zone.parent, logs=[zone.parent / "server.log"],
                           cores=(CLIENT_CORE,), timeout=120)  # fmt: skip
    rows = []
    try:
        for name in names:
            best = float("inf")
            for run in range(runs):
                folder = work / f"{name}-secondary-{run}"
                folder.mkdir()
                command = secondary_command(name, folder, PORT + 1, PORT)
                if command is None:
                    best = -1
                    break
                start = time.perf_counter()
                proc = start_server(command, lambda: serves_last(PORT + 1, records), cwd=folder,
                                    logs=[folder / "server.log"], timeout=300, settle=0)  # fmt: skip
                best = min(best, time.perf_counter() - start)
                stop(proc)
            rows.append({"server": name, "skipped": f"{name} is not installed"} if best < 0 else
                        {"server": name, "seconds": best})  # fmt: skip
    finally:
        stop(primary)
    return rows


def nsupdate_round(port: int, first: int, count: int) -> float | str:
    """``count`` updates (names u{first}... ) sent one at a time by nsupdate over TCP: seconds, or why it failed."""
    script = [f"server 127.0.0.1 {port}", "zone example.test"]
    for i in range(first, first + count):
        script += [f"update add u{i}.example.test 300 A 192.0.2.{i % 250}", "send"]
    start = time.perf_counter()
    done = run_pinned(["nsupdate", "-v", "-y", KEY], input="\n".join(script) + "\n", capture_output=True, text=True,
                      timeout=600)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        return f"nsupdate failed: {done.stderr.strip()[-300:]}"
    check = dns.query.tcp(dns.message.make_query(f"u{first + count - 1}.example.test", "A"), "127.0.0.1", port=port)
    return elapsed if check.answer else "the last update is not answered"


def measure_updates(names: list[str], work: Path, count: int, rounds: int) -> list[dict]:
    """Every server started at once (each on its own port, on the server core), then ``rounds`` rounds of
    ``count / rounds`` updates each, the servers taking turns: a disk whose sync latency drifts over a minute (a
    shared machine's does) weighs on all alike, where one server after the other measured the drift."""
    names = [name for name in names if name != "nsd"]
    procs: dict[str, object] = {}
    rows: dict[str, dict] = {}
    try:
        for offset, name in enumerate(names):
            port = PORT + 10 + offset
            zone = fresh_zone(work, f"{name}-updates", 100)
            command = commands(name, zone.parent, zone, port)
            if command is None:
                rows[name] = {"server": name, "skipped": f"{name} is not installed"}
                continue
            procs[name] = (start_server(command, lambda port=port: answers(port), cwd=zone.parent,
                                        logs=[zone.parent / "server.log"]), port)  # fmt: skip
            rows[name] = {"server": name, "seconds": [], "count": 0}
        each = max(1, count // rounds)
        for round_ in range(rounds):
            for name, (_, port) in procs.items():  # type: ignore[misc]
                row = rows[name]
                if "skipped" in row:
                    continue
                got = nsupdate_round(port, round_ * each, each)
                if isinstance(got, str):
                    rows[name] = {"server": name, "skipped": got}
                    continue
                row["seconds"].append(got)
                row["count"] += each
    finally:
        for proc, _ in procs.values():  # type: ignore[misc]
            stop(proc)
    out = []
    for name in names:
        row = rows[name]
        if "skipped" not in row:
            rates = sorted(each / seconds for seconds in row["seconds"])
            row = {"server": name, "rate": row["count"] / sum(row["seconds"]), "low": rates[0], "high": rates[-1]}
        out.append(row)
    return out


def table(rows: list[dict], peer: str, key: str, cells) -> list[str]:
    """A table's rows: each server's ``cells(row)``, then its ``key`` figure as a ratio to ``peer``'s (a skipped
    server: why, the rest of its row empty)."""
    base = next((row[key] for row in rows if row["server"] == peer and "skipped" not in row), None)
    out = []
    for row in rows:
        if "skipped" in row:
            out.append(f"| {row['server']} | skipped: {row['skipped']} |")
            continue
        out.append(f"| {' | '.join([row['server'], *cells(row), ratio(row[key], base)])} |")
    return out


def main() -> None:
    parser = parser_for(__doc__, SERVERS)
    parser.add_argument("--records", type=int, default=100_000, help="A records in the transferred zone")
    parser.add_argument("--runs", type=int, default=5, help="transfers per server (the best counts)")
    parser.add_argument("--updates", type=int, default=2000, help="updates per server")
    parser.add_argument("--rounds", type=int, default=8, help="turns the servers take at the updates")
    args = parse(parser, {"records": 2000, "runs": 1, "updates": 10, "rounds": 2})
    need_tool("dig", "dnsutils")
    need_tool("nsupdate", "bind9-dnsutils")
    servers = args.only or SERVERS
    with tempfile.TemporaryDirectory(prefix="sockhop-bench-dnsupdate-") as folder:
        work = Path(folder)
        transfers = [measure_axfr(name, work, args.records, args.runs) for name in servers if name != "bind"]
        secondaries = measure_secondary([name for name in servers if name != "nsd"], work, args.records, args.runs)
        updates = measure_updates(servers, work, args.updates, args.rounds)
    lines = [f"## AXFR of {args.records:,} records (dig axfr on core {CLIENT_CORE}, server on core {SERVER_CORE})",
             "", "| server | best time (s) | server CPU (s) | / nsd |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += table(transfers, "nsd", "seconds", lambda row: [fmt(row["seconds"], 3), fmt(row["cpu"], 3)])
    lines += ["", "Target: sockhop's time ≤ 1.0x NSD's.", "",
              f"## Secondary: loading the {args.records:,}-record zone from NSD (start to answering its last record)",
              "", "| secondary | best time (s) | / bind |", "|---|---:|---:|"]  # fmt: skip
    lines += table(secondaries, "bind", "seconds", lambda row: [fmt(row["seconds"], 3)])
    lines += ["", "Target: sockhop's time ≤ 1.5x BIND's.", "",
              f"## Durable dynamic updates ({args.updates:,} nsupdate sends over TCP, each answered once on disk, in "
              f"{args.rounds} rounds the servers take in turn)",
              "", "| server | updates/s | slowest / fastest round | / bind |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += table(updates, "bind", "rate",
                   lambda row: [fmt(row["rate"], 1), f"{fmt(row['low'], 0)} / {fmt(row['high'], 0)}"])  # fmt: skip
    lines += ["", "Target: sockhop ≥ 1.0x BIND."]
    if args.quick:
        lines += ["", "(--quick: a smoke run; these figures mean nothing)"]
    write_report(args.out, "dnsupdate", "DNS zone transfer and dynamic update", "\n".join(lines))


if __name__ == "__main__":
    main()
