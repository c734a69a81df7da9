#!/usr/bin/env python3
"""Where the time of zones that move goes (issue 17): a harness for each figure bench/dnsupdate.py measures, small
enough to run while working and with ``--profile`` to see inside.

* ``updates``: a sockhop server (``sockhop serve dns`` on loopback, eventloop) is sent ``--count`` TSIG-signed
  dynamic updates one at a time by dnspython (``dns.update``, over TCP as ``nsupdate -v`` does, or ``--udp``), each
  waiting for its answer -- or by one ``nsupdate`` (``--nsupdate``), as bench/dnsupdate.py sends them:
  milliseconds per update, the server's CPU per update, and (``--strace``) the fsync calls per update
  (``--strace all``: every system call, counted). ``--profile``: the server runs under cProfile; its heaviest
  functions are printed at the end (cProfile sees the main thread only: over TCP an update is applied on the
  event loop and synced on the engine's deferred-work thread, which it does not see).
* ``pull``: a zone of ``--records`` A records is encoded as a primary sends it (sockhop's own transfer messages,
  about 16 KB each, as NSD's), then read by the secondary's code in this process, with the server's collector
  settings -- the transfer reader (wire records), the zone's index (what ``--secondary`` does with a transfer), the
  first lookup of the last name (its node made), and ``--data``'s copy written and read back -- each step timed;
  ``--bound`` also times dnspython parsing the same messages alone (dns.message, and its name and rdata readers:
  what the reader did before it read the wire itself).
* ``axfr``: the first (uncached) encoding of that zone's AXFR messages, as the primary does for the first transfer
  of a version.

    python bench/zonework.py updates --count 300 [--zone-records 100000] [--udp] [--nsupdate] [--profile]
                                     [--strace [all]]
    python bench/zonework.py pull --records 100000 [--profile] [--bound]
    python bench/zonework.py axfr --records 100000 [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT / "src"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]  # bench/dns.py is not dns

import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdata  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.rrset  # noqa: E402
import dns.tsig  # noqa: E402
import dns.update  # noqa: E402
import dns.wire  # noqa: E402

SECRET = base64.b64encode(b"sockhop bench key for nsupdate!!").decode()
ORIGIN = "example.test."
PORT = 17950


def zone_text(records: int) -> str:
    lines = ["$ORIGIN example.test.", "$TTL 3600", "@ IN SOA ns1 hostmaster 1 7200 3600 1209600 3600", "@ IN NS ns1",
             "ns1 IN A 192.0.2.53"]  # fmt: skip
    lines += [f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(records)]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def show_profile(stats: pstats.Stats, top: int) -> None:
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


# -- updates --------------------------------------------------------------------------------------------------
def updates(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sockhop-zonework-"))
    zone = work / "example.test.zone"
    zone.write_text(zone_text(args.zone_records))
    serve = ["-m", "sockhop", "serve", "dns", str(zone), "--listen", f"127.0.0.1:{args.port}", "--model", "eventloop",
             "--rrl-rate", "0", "--tsig", f"bench:{SECRET}", "--allow-update", "key:bench"]  # fmt: skip
    profile = work / "server.prof"
    command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if args.profile else []), *serve]
    if args.strace:
        calls = [] if args.strace == "all" else ["-e", "trace=fsync,fdatasync,sync_file_range"]
        command = ["strace", "-f", "-c", "-o", str(work / "strace.txt"), *calls, *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = open(work / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    key = dns.tsig.Key("bench", SECRET, dns.tsig.HMAC_SHA256)
    send = dns.query.udp if args.udp else dns.query.tcp
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                dns.query.udp(dns.message.make_query(ORIGIN, "SOA"), "127.0.0.1", port=args.port, timeout=0.5)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {(work / 'server.log').read_text()[-500:]}") from None
        server_pid = proc.pid if not args.strace else int(_child(proc.pid))
        times = []
        cpu_before = cpu_seconds(server_pid)
        start = time.perf_counter()
        if args.nsupdate:  # bench/dnsupdate.py's client: one nsupdate, a send per update
            script = [f"server 127.0.0.1 {args.port}", f"zone {ORIGIN}"]
            for i in range(args.count):
                script += [f"update add u{i}.{ORIGIN} 300 A 192.0.2.{i % 250}", "send"]
            flags = [] if args.udp else ["-v"]
            done = subprocess.run(["nsupdate", *flags, "-y", f"hmac-sha256:bench:{SECRET}"], capture_output=True,
                                  input="\n".join(script) + "\n", text=True, timeout=600)  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"nsupdate: {done.stderr.strip()[-300:]}")
            times = [(time.perf_counter() - start) / args.count]
        for i in range(0 if args.nsupdate else args.count):
            update = dns.update.UpdateMessage(ORIGIN, keyring=key)
            update.add(f"u{i}", 300, "A", f"192.0.2.{i % 250}")
            began = time.perf_counter()
            reply = send(update, "127.0.0.1", port=args.port, timeout=10)
            times.append(time.perf_counter() - began)
            if reply.rcode() != dns.rcode.NOERROR:
                raise SystemExit(f"update {i}: {dns.rcode.to_text(reply.rcode())}")
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server_pid) - cpu_before
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        log.close()
    times.sort()
    how = "UDP" if args.udp else "TCP"
    how += " (nsupdate)" if args.nsupdate else ""
    print(
        f"{args.count} updates over {how}, zone of {args.zone_records:,} records: "
        f"{elapsed / args.count * 1000:.2f} ms per update ({args.count / elapsed:.0f}/s), median "
        f"{times[len(times) // 2] * 1000:.2f} ms (p99 {times[len(times) * 99 // 100] * 1000:.2f}, max "
        f"{times[-1] * 1000:.2f}), server CPU {cpu / args.count * 1000:.2f} ms per update"
    )
    if args.strace:
        text = (work / "strace.txt").read_text()
        calls = sum(
            int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?f", text, re.M)
        )
        print(f"sync calls: {calls} ({calls / args.count:.2f} per update)\n{text}")
    if args.profile:
        show_profile(pstats.Stats(str(profile)), args.top)


def _child(pid: int) -> str:
    """The server under strace: strace's child."""
    for _ in range(100):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise SystemExit("strace started no server")


# -- pull and axfr --------------------------------------------------------------------------------------------
def primary_zone(records: int):
    """The zone as a primary holds it, built straight from RRsets (reading 100,000 records of text is slow)."""
    from sockhop.dns.zone import from_records

    origin = dns.name.from_text(ORIGIN)
    rrsets = [
        dns.rrset.from_text(
            origin, 3600, "IN", "SOA", "ns1.example.test. hostmaster.example.test. 1 7200 3600 1209600 3600"
        ),
        dns.rrset.from_text(origin, 3600, "IN", "NS", "ns1.example.test."),
        dns.rrset.from_text("ns1.example.test.", 3600, "IN", "A", "192.0.2.53"),
    ]
    rrsets += [
        dns.rrset.from_text(f"h{i}.example.test.", 3600, "IN", "A", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        for i in range(records)
    ]
    return from_records(origin, rrsets, "bench")


def timed(label: str, function, profiler: cProfile.Profile | None, repeat: int = 1):
    """Run ``function`` ``repeat`` times; print the least CPU time (this process's: other load on the machine moves
    wall time far more) and its wall time."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        result = function()
        if profiler is not None:
            profiler.disable()
        best = min(best, (time.process_time() - cpu, time.perf_counter() - start))
    print(f"{label}: {best[0]:.3f} s CPU ({best[1]:.3f} s wall)")
    return result


def axfr_messages(zone, query: dns.message.Message | None = None) -> list[bytes]:
    from sockhop.dns import transfer

    query = query or dns.message.make_query(zone.origin, "AXFR")
    return transfer.stamped(transfer.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order()), query)


def low_level(wire: bytes) -> int:
    """Every name and record data of a message read with dnspython's lowest pieces, and nothing kept: the floor of
    reading a transfer with dnspython."""
    parser = dns.wire.Parser(wire)
    counts = parser.get_struct("!HHHHHH")[2:]
    for _ in range(counts[0]):
        parser.get_name(decompress=True)
        parser.get_struct("!HH")
    for _ in range(sum(counts[1:])):
        parser.get_name(decompress=True)
        rdtype, rdclass, _, rdlen = parser.get_struct("!HHIH")
        with parser.restrict_to(rdlen):
            dns.rdata.from_wire_parser(rdclass, rdtype, parser, None)
    return sum(counts[1:])


def pull(args: argparse.Namespace) -> None:
    from sockhop.dns.pull import TransferReader, framed, request
    from sockhop.dns.secondary import Secondary, keep, load_kept

    zone = primary_zone(args.records)
    origin = zone.origin
    query = request(origin, None)
    stream = framed(query)  # the request as it goes out: the reader checks the answers against it
    messages = axfr_messages(zone, query)
    wire = b"".join(len(m).to_bytes(2, "big") + m for m in messages)
    print(f"{args.records:,} records in {len(messages)} messages, {len(wire):,} bytes (request {len(stream)} bytes)")
    profiler = cProfile.Profile() if args.profile else None
    if args.bound:
        timed("dnspython's dns.message.from_wire alone", lambda: [
            dns.message.from_wire(m, xfr=True, origin=None, multi=True, one_rr_per_rrset=True) for m in messages
        ], None, args.repeat)  # fmt: skip
        timed("dnspython's names and rdata alone (dns.name.from_wire_parser, rdata from_wire_parser)",
              lambda: [low_level(m) for m in messages], None, args.repeat)  # fmt: skip
    chunk = 65536

    def read():
        reader = TransferReader(query, None)
        pulled = None
        for at in range(0, len(wire), chunk):
            pulled = reader.feed(wire[at : at + chunk])
        return pulled

    if not args.bound:  # the server's collector settings (engine/base.py): what is loaded is frozen
        gc.freeze()
        gc.set_threshold(10_000)
    pulled = timed("transfer reader (parse, check)", read, profiler, args.repeat)
    job = Secondary.__new__(Secondary)
    job.origin, job.path, job.primary = origin, None, "bench"
    built, what = timed("zone index (the secondary's build)", lambda: job._build(None, pulled), profiler, args.repeat)
    timed("both (what a secondary does with a transfer)", lambda: job._build(None, read()), None, args.repeat)
    last = dns.name.from_text(f"h{args.records - 1}.{ORIGIN}")
    timed("the first answer's lookup (its node made)", lambda: built.get(last, dns.rdatatype.A), None)
    print(f"built: {what}; {len(built.rrsets):,} names")
    with tempfile.TemporaryDirectory(prefix="sockhop-zonework-") as folder:
        path = Path(folder) / "example.test.axfr"
        timed("--data: keeping it (the AXFR stream, synced)", lambda: keep(path, built), profiler, args.repeat)
        kept = timed("--data: a restart reading it back", lambda: load_kept(path, origin), profiler, args.repeat)
        print(f"kept: {path.stat().st_size:,} bytes; read back: {kept[0].record_count():,} records")
    if profiler is not None:
        show_profile(pstats.Stats(profiler), args.top)


def axfr(args: argparse.Namespace) -> None:
    zone = primary_zone(args.records)
    profiler = cProfile.Profile() if args.profile else None
    messages = timed("first AXFR's encoding", lambda: axfr_messages(zone), profiler, args.repeat)
    print(f"{len(messages)} messages, {sum(map(len, messages)):,} bytes")
    if profiler is not None:
        show_profile(pstats.Stats(profiler), args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true", help="profile (cProfile) and print the heaviest functions")
    parser.add_argument("--top", type=int, default=25, help="functions printed with --profile")
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("updates", help="dynamic updates, one at a time: ms per update")
    one.add_argument("--count", type=int, default=300)
    one.add_argument("--zone-records", type=int, default=100, help="A records in the updated zone")
    one.add_argument("--udp", action="store_true", help="send the updates over UDP (default TCP, as nsupdate -v)")
    one.add_argument("--strace", nargs="?", const="sync", choices=("sync", "all"),
                     help="count the server's fsync calls (all: every system call) with strace")  # fmt: skip
    one.add_argument("--nsupdate", action="store_true", help="send them with nsupdate, as bench/dnsupdate.py does")
    one.add_argument("--port", type=int, default=PORT)
    for name in ("pull", "axfr"):
        each = sub.add_parser(name)
        each.add_argument("--records", type=int, default=100_000)
        each.add_argument("--repeat", type=int, default=1, help="runs of each step (the least CPU time counts)")
        if name == "pull":
            each.add_argument("--bound", action="store_true", help="also time dnspython's parsing alone")
    args = parser.parse_args()
    {"updates": updates, "pull": pull, "axfr": axfr}[args.what](args)


if __name__ == "__main__":
    main()
