#!/usr/bin/env python3
"""Online signing in one process: what a query costs ``serve dns --sign``, with no sockets and no load generator.

bench/dns.py measures online signing against Knot under load (issue 16); this script measures the same work on one
core so that a change to the signing path can be judged in seconds, and profiled. It serves bench/dns.py's zone,
signed with a key made and read back as ``sockhop dns keygen`` and ``serve dns --sign`` make and read it, and feeds
the protocol the UDP server drives (``DnsDatagram``) the same questions bench/dns.py's online-signing figure sends:
a third NXDOMAIN for names never asked before, the rest wildcards, a CNAME and names that exist, RD and DO set
(dnsload -D). It starts cold, as that figure does, and hands the protocol the clock once per batch of datagrams, as
the engine does. Printed: CPU microseconds per query overall, for the NXDOMAIN third and for the rest.

    python bench/signing_profile.py                  # both algorithms, 9,000 queries (~3 s of load), best of 3
    python bench/signing_profile.py -a ecdsap256sha256 -n 30000 --profile   # and cProfile's top entries
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# run as a script, this folder comes first on sys.path, and its dns.py would hide dnspython's `dns`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdatatype  # noqa: E402

from sockhop.dns import keys  # noqa: E402
from sockhop.dns.protocol import DnsDatagram  # noqa: E402
from sockhop.dns.server import NameServer  # noqa: E402
from sockhop.dns.signer import attach  # noqa: E402
from sockhop.dns.zone import read_zones  # noqa: E402

ALGORITHMS = ["ECDSAP256SHA256", "ED25519"]
BATCH = 32  # datagrams per tick: the event loop reads up to this many per wake-up
PEER = ("127.0.0.1", 40000)


def bench_module():
    """bench/dns.py, for its zone and its online-signing query mix (loaded under another name than dnspython's)."""
    spec = importlib.util.spec_from_file_location("dnsbench", HERE / "dns.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def setup(work: Path, algorithm: str, count: int) -> tuple[DnsDatagram, list[tuple[bool, bytes]]]:
    """The protocol serving the signed zone, and ``count`` queries: (NXDOMAIN expected, wire)."""
    bench = bench_module()
    zone_file = work / "example.test.zone"
    zone_file.write_text(bench.ZONE + bench.AMPLIFIER)
    key_file = work / "example.test.key"
    keys.save(keys.generate("example.test", algorithm), key_file)
    zones = attach(read_zones([str(zone_file)]), [keys.load(key_file)], time.time)  # as serve dns --sign does
    proto = DnsDatagram(NameServer(zones))
    lines = bench.online_files(work)["fresh"].read_text().split("\n")
    queries = []
    for i in range(count):
        name, rdtype = lines[i % (len(lines) - 1)].split()
        if i >= len(lines) - 1:
            name = f"r{i}{name}"  # past the file's end: still never asked before
        query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
        query.id = i & 0xFFFF
        queries.append((name.startswith(("nx", "r")), query.to_wire()))
    return proto, queries


def run(proto: DnsDatagram, queries: list[tuple[bool, bytes]]) -> dict[str, float]:
    """Answer every query (each must be answered) and time it: CPU µs per query, overall and by kind."""
    spent = {True: 0, False: 0}
    counted = {True: 0, False: 0}
    clock = time.process_time_ns  # CPU, not wall: other processes share the machine
    cpu_before = time.process_time()
    for start in range(0, len(queries), BATCH):
        proto.tick(time.monotonic())
        for nx, wire in queries[start : start + BATCH]:
            begun = clock()
            replies = proto.datagram_received(wire, PEER)
            spent[nx] += clock() - begun
            counted[nx] += 1
            if len(replies) != 1:
                raise SystemExit(f"no reply to {dns.message.from_wire(wire).question[0]}")
    cpu = time.process_time() - cpu_before
    return {
        "all": cpu / len(queries) * 1e6,
        "nxdomain": spent[True] / max(counted[True], 1) / 1e3,
        "rest": spent[False] / max(counted[False], 1) / 1e3,
    }


def check(proto: DnsDatagram, queries: list[tuple[bool, bytes]]) -> None:
    """The replies are what the figure counts: NXDOMAIN for the fresh names, NOERROR for the rest, signed."""
    for nx, wire in queries[:30]:
        reply = dns.message.from_wire(proto.datagram_received(wire, PEER)[0])
        expected = dns.rcode.NXDOMAIN if nx else dns.rcode.NOERROR
        signed = any(rrset.rdtype == dns.rdatatype.RRSIG for rrset in reply.answer + reply.authority)
        if reply.rcode() != expected or not signed:
            raise SystemExit(f"unexpected reply:\n{reply}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-a", "--algorithm", type=str.upper, choices=ALGORITHMS, action="append", help="default: both")
    parser.add_argument("-n", "--queries", type=int, default=9000, help="queries per algorithm (default 9000)")
    parser.add_argument(
        "-r", "--repeat", type=int, default=3, help="runs per algorithm, each from a cold start; the best is printed"
        " (what other processes take from this one's core goes into every run, least into the best; default 3)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries (one run)")
    parser.add_argument("--top", type=int, default=30, help="entries printed with --profile (default 30)")
    args = parser.parse_args()
    for algorithm in args.algorithm or ALGORITHMS:
        runs = []
        for _ in range(1 if args.profile else max(1, args.repeat)):
            with tempfile.TemporaryDirectory() as folder:
                proto, queries = setup(Path(folder), algorithm, args.queries)
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profiler.enable()
                runs.append(run(proto, queries))
                if profiler is not None:
                    profiler.disable()
                check(proto, queries)
        figures = min(runs, key=lambda figures: figures["all"])
        print(
            f"{algorithm}: {figures['all']:.1f} µs CPU/query over {len(queries)} queries, best of {len(runs)} "
            f"(NXDOMAIN, fresh names: {figures['nxdomain']:.1f} µs; the rest: {figures['rest']:.1f} µs)",
            flush=True,
        )
        if profiler is not None:
            stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
            print(f"Python function calls per query: {stats.total_calls / len(queries):.0f} (steadier than times)")
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
