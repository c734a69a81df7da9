#!/usr/bin/env python3
"""Relay benchmark, end to end: smtp-source submits mail for a remote domain to the relay (a client in its relay
network), the relay queues it durably (the 250 comes after the fsync) and delivers it to Postfix's smtp-sink -- sockhop
(its --spool and queue runner, eventloop and thread) beside a private Postfix relaying to the same sink.

A figure is messages per second delivered: a fixed count submitted, over the time from the first submission until
the sink has counted every message and the relay's queue is empty. The acceptance rate alone (over smtp-source's own
time) is reported beside it. Relay pinned to core 0; smtp-source and smtp-sink to core 1. Table in
bench/results/relay.md.

    make bench                                         # everything
    python bench/relay.py --messages 200 --sizes 1024  # a short look
    python bench/relay.py --quick --out /tmp/bench     # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CLIENT_CORE,
    need_tool,
    need_two_cores,
    parse,
    parser_for,
    port_open,
    ratio,
    start_server,
    stop,
    write_report,
)
from mail import PrivatePostfix, Unavailable, label, smtp_source

PORT, SINK = 17900, 17990
RELAYS = ["eventloop", "thread", "postfix"]
DOMAIN, REMOTE = "relay.test", "remote.test"


class Sink:
    """smtp-sink on the client core, counting what it was given (``-c``: a running count on its standard output)."""

    def __init__(self, work: Path) -> None:
        self.out = work / "sink.out"
        self.proc = start_server(["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{SINK}", "1000"],
                                 lambda: port_open(SINK), cores=(CLIENT_CORE,), logs=[self.out])  # fmt: skip

    def count(self) -> int:
        found = re.findall(rb"mesg=(\d+)", self.out.read_bytes())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        stop(self.proc)


class Relay:
    def __init__(self, name: str, work: Path, port: int) -> None:
        self.name, self.work, self.port = name, work, port
        self.proc: subprocess.Popen | None = None
        self.postfix: PrivatePostfix | None = None
        work.mkdir()

    def start(self) -> None:
        if self.name == "postfix":
            self._start_postfix()
            return
        command = [sys.executable, "-m", "sockhop", "serve", "mail", str(self.work / "mail"), "--domain", DOMAIN,
                   "--spool", str(self.work / "spool"), "--relay-networks", "127.0.0.0/8", "--relayhost",
                   f"127.0.0.1:{SINK}", "--model", self.name, "--listen", f"127.0.0.1:{self.port}",
                   "--max-connections", "1000", "--grace", "2", "--max-size", "20M"]  # fmt: skip
        # this tree's sockhop, not whichever the interpreter has installed (a worktree's bench measures its own code)
        src = str(Path(__file__).resolve().parent.parent / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        try:
            self.proc = start_server(command, lambda: port_open(self.port), logs=[self.work / "server.log"], env=env)
        except RuntimeError as exc:
            raise Unavailable(str(exc)) from None

    def queued(self) -> int:
        """Messages still in the relay's queue."""
        if self.postfix is not None:
            spool = self.postfix.spool
            folders = [spool / d for d in ("maildrop", "incoming", "active", "deferred")]
        else:
            folders = [self.work / "spool" / "queue"]
        return sum(len(files) for folder in folders if folder.is_dir() for _, _, files in os.walk(folder))

    def stop(self) -> None:
        if self.postfix is not None:
            self.postfix.stop()
        if self.proc is not None:
            stop(self.proc)

    def _start_postfix(self) -> None:
        """Postfix relaying everything to the sink."""
        self.postfix = PrivatePostfix(self.work, self.port)
        self.postfix.start(f"""\
myhostname = relay.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{SINK}
smtp_dns_support_level = disabled
""")


def relayed(relay: Relay, sink: Sink, sessions: int, messages: int, size: int) -> dict:
    """One figure: submit, then wait until the sink has every message and the relay's queue is empty."""
    base = sink.count()
    begin = time.monotonic()
    # from and to the remote domain: mail the relay takes only because the client is in its relay network
    sent, source_seconds = smtp_source(relay.port, sessions, messages, size, max(120.0, messages / 5),
                                       domain=REMOTE)  # fmt: skip
    deadline = time.monotonic() + max(60.0, messages / 10)
    while (sink.count() - base < sent or relay.queued()) and time.monotonic() < deadline:
        time.sleep(0.02)
    seconds = time.monotonic() - begin
    got = sink.count() - base
    check = "ok" if sent and got >= sent and not relay.queued() else f"MISMATCH: {got}/{sent}, {relay.queued()} queued"
    return {"server": relay.name, "sessions": sessions, "size": size, "check": check,
            "rate": got / seconds if sent and seconds > 0 else 0.0,
            "accept": sent / source_seconds if sent and source_seconds > 0 else 0.0}  # fmt: skip


def measure(name: str, work: Path, port: int, sink: Sink, sessions: list[int], sizes: list[int], messages: int):
    relay = Relay(name, work, port)
    rows = []
    try:
        relay.start()
        relayed(relay, sink, 1, min(messages, 10), 1024)  # warm-up
        for size in sizes:
            for n in sessions:
                row = relayed(relay, sink, n, messages, size)
                print(f"bench:   {name} {n} sessions {label(size)}: {row['rate']:.0f} msg/s delivered, "
                      f"{row['accept']:.0f} accepted ({row['check']})", file=sys.stderr)  # fmt: skip
                rows.append(row)
    except Unavailable as exc:
        print(f"bench: {name}: skipped: {exc}", file=sys.stderr)
    finally:
        relay.stop()
    return rows


def table(rows: list[dict], messages: int) -> str:
    configs = sorted({(r["size"], r["sessions"]) for r in rows})
    names = list(dict.fromkeys(r["server"] for r in rows))
    cell = {(r["server"], r["size"], r["sessions"]): r for r in rows}
    head = "| relay | " + " | ".join(f"{label(s)}, {n} sess." for s, n in configs) + " |"
    lines = [head, "|" + "---|" * (1 + len(configs))]
    for name in names:
        cells = []
        for size, n in configs:
            row = cell.get((name, size, n))
            cells.append(f"{row['rate']:.0f} ({row['accept']:.0f})" + ("" if row["check"] == "ok" else " (!)")
                         if row else "-")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "postfix" in names:
        lines += ["", "Ratios, delivered end to end (sockhop / Postfix):", ""]
        lines.append("| sockhop | " + " | ".join(f"{label(s)}, {n} sess." for s, n in configs) + " |")
        lines.append("|" + "---|" * (1 + len(configs)))
        for name in (n for n in names if n != "postfix"):
            cells = []
            for size, n in configs:
                mine, theirs = cell.get((name, size, n)), cell.get(("postfix", size, n))
                cells.append(ratio(mine["rate"], theirs["rate"]) if mine and theirs else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    checks = [f"{r['server']} {label(r['size'])} {r['sessions']}: {r['check']}" for r in rows]
    lines += ["", f"Messages per second delivered to smtp-sink (accepted from smtp-source in brackets), {messages} "
              "per figure, both relays durable (fsync before the 250). Checks: " + "; ".join(checks) + "."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = parser_for(__doc__, RELAYS)
    parser.add_argument("--messages", type=int, default=2000, help="messages per figure (default 2000)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10], help="parallel sessions (default 1 10)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 102400], help="bytes (default 1024 102400)")
    args = parse(parser, quick={"messages": 10, "sessions": [1], "sizes": [1024]})
    need_two_cores("smtp-source and smtp-sink")
    need_tool("smtp-source", "postfix")
    need_tool("smtp-sink", "postfix")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sockhop-relaybench-") as top:
        os.chmod(top, 0o755)  # Postfix's own users must reach their folders inside it
        sink = Sink(Path(top))
        try:
            for i, name in enumerate(args.only or RELAYS):
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                rows += measure(name, Path(top) / name, PORT + 10 * i, sink, args.sessions, args.sizes, args.messages)
        finally:
            sink.stop()
    write_report(args.out, "relay", "SMTP relay, end to end", table(rows, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
