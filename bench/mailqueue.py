#!/usr/bin/env python3
"""Mail queue benchmark: does a big queue cost sockhop anything? smtp-source submits to sockhop (eventloop, the
client in --relay-networks) mail for a remote domain, which goes durably into --spool; measured with an empty
spool and with --queued messages already in it (100,000 by default), 1 and 10 sessions, 1 KiB and 100 KiB. Then
the restart: from starting the server on the full spool to its first 250 for a new message, against the same on
an empty spool.

Targets (issue 15): acceptance with 100,000 queued >= 0.9x an empty queue; serving again within 2 s of a restart.
The relay figures against Postfix (end to end, through a queue runner to smtp-sink) need delivery from the queue,
which is not built yet: this script measures what is.

Server pinned to core 0, smtp-source to core 1. Table in bench/results/mailqueue.md.

    make bench                                         # with the others
    python bench/mailqueue.py --queued 20000           # a shorter look
    python bench/mailqueue.py --quick --out /tmp/bench # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
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
from mail import smtp_source

sys.path.insert(0, str(ROOT / "src"))
from sockhop.mail.spool import envelope_line  # noqa: E402 -- the format acceptance writes, for the filling

PORT = 17900
DOMAIN = "example.test"
REMOTE = "remote.test"


def fill(spool: Path, count: int, size: int = 2048) -> None:
    """``count`` queued messages, as acceptance writes them (one file each, the envelope on the first line), and
    then one sync: the figures start from a queue that is on disk."""
    for sub in ("tmp", "queue", "hold", "state"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    body = b"Subject: queued\n\n" + b"x" * size + b"\n"
    base = int(time.time()) - count
    folder = f"{spool}/queue/"
    for i in range(count):
        fd = os.open(f"{folder}{base + i}M0P1Q{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, envelope_line(f"a@{DOMAIN}", [f"r{i}@{REMOTE}"], base + i) + body)
        os.close(fd)
    os.sync()


def serve(work: Path, spool: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "sockhop", "serve", "mail", str(work / "mail"), "--domain", DOMAIN,
               "--listen", f"127.0.0.1:{PORT}", "--model", "eventloop", "--spool", str(spool), "--no-delivery",
               "--relay-networks", "127.0.0.0/8", "--max-size", "20M"]  # fmt: skip
    return start_server(command, lambda: port_open(PORT), logs=[work / "server.log"], env=dict(os.environ,
                        PYTHONPATH=str(ROOT / "src")))  # fmt: skip


def restart_seconds(work: Path, spool: Path) -> float:
    """From starting the server to the 250 of a first message."""
    begin = time.monotonic()
    proc = serve(work, spool)
    try:
        with smtplib.SMTP("127.0.0.1", PORT, timeout=30) as smtp:
            smtp.sendmail(f"a@{DOMAIN}", [f"first@{REMOTE}"], b"Subject: first\r\n\r\nx\r\n")
        return time.monotonic() - begin - 0.3  # start_server's settle time is not the server's
    finally:
        stop(proc)


def rates(
    work: Path, spool: Path, sessions: list[int], sizes: list[int], messages: int
) -> dict[tuple[int, int], float]:
    proc = serve(work, spool)
    found = {}
    try:
        smtp_source_remote(2, min(messages, 10), 1024)  # warm-up
        for size in sizes:
            for n in sessions:
                sent, seconds = smtp_source_remote(n, messages, size)
                found[(size, n)] = sent / seconds if sent and seconds > 0 else 0.0
                print(f"bench:   {spool.name} {n} sessions {size} B: {found[(size, n)]:.0f} msg/s", file=sys.stderr)
    finally:
        stop(proc)
    return found


def smtp_source_remote(sessions: int, messages: int, size: int) -> tuple[int, float]:
    """smtp-source to a remote recipient, relayed from 127.0.0.1: every message goes to the queue."""
    return smtp_source(PORT, sessions, messages, size, timeout=max(120.0, messages / 5), domain=REMOTE)


def main() -> int:
    parser = parser_for(__doc__, ["eventloop"])
    parser.add_argument("--queued", type=int, default=100_000, help="messages already queued (default 100000)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per figure (default 2000)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10], help="parallel sessions (default 1 10)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 102400], help="bytes (default 1024 102400)")
    args = parse(parser, quick={"queued": 2000, "messages": 20, "sessions": [1, 4], "sizes": [1024]})
    need_two_cores("smtp-source")
    need_tool("smtp-source", "postfix")
    with tempfile.TemporaryDirectory(prefix="sockhop-queuebench-") as top:
        work = Path(top)
        empty, full = work / "empty", work / "full"
        restart_empty = restart_seconds(work, empty)
        print(f"bench: filling a spool with {args.queued} messages ...", file=sys.stderr, flush=True)
        fill(full, args.queued)
        restart_full = restart_seconds(work, full)
        empty_rates = rates(work, empty, args.sessions, args.sizes, args.messages)
        full_rates = rates(work, full, args.sessions, args.sizes, args.messages)
    configs = sorted(empty_rates)
    head = "| spool | " + " | ".join(f"{s // 1024} KiB, {n} sess." for s, n in configs) + " |"
    lines = [head, "|" + "---|" * (1 + len(configs))]
    lines.append("| empty | " + " | ".join(f"{empty_rates[c]:.0f}" for c in configs) + " |")
    lines.append(f"| {args.queued} queued | " + " | ".join(f"{full_rates[c]:.0f}" for c in configs) + " |")
    lines.append(
        "| ratio (target >= 0.9) | " + " | ".join(ratio(full_rates[c], empty_rates[c]) for c in configs) + " |"
    )
    lines += ["", "Messages per second accepted into the queue (durable before each 250), "
              f"{args.messages} per figure.", "",
              f"Restart to the first 250: {restart_empty:.2f} s on an empty spool, {restart_full:.2f} s with "
              f"{args.queued} queued (target <= 2 s)."]  # fmt: skip
    write_report(args.out, "mailqueue", "mail queue", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
