#!/usr/bin/env python3
"""SMTP receive benchmark: Postfix's smtp-source against sockhop (eventloop, prefork, thread) and, in the same run,
the peers -- Postfix itself (durable: its queue file is fsynced before the 250), aiosmtpd with a Maildir handler
that fsyncs (durable, as sockhop), and Postfix's smtp-sink (discards: an upper bound).

Server pinned to core 0, smtp-source to core 1. For 1 and 10 parallel sessions and 1 KiB and 100 KiB messages:
messages per second (a fixed count sent, over the wall time smtp-source took), then the Maildir checked: every
message that got its 250 is there, whole (count, and each file holds the whole body). Only ratios within one run
count. Table in bench/results/mail.md, plot in bench/results/mail.png.

    make bench                                       # everything
    python bench/mail.py --messages 20 --sizes 1024  # a short look
    python bench/mail.py --quick --out /tmp/bench    # a smoke run: the script works (figures mean nothing)
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    HERE,
    SERVER_CORE,
    grouped_bars,
    need_tool,
    need_two_cores,
    parse,
    parser_for,
    pin_to,
    port_open,
    ratio,
    run_pinned,
    start_server,
    stop,
    wait_ready,
    write_report,
)

PORT = 17800
SOCKHOP = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]  # every model, as the lecture compares them
PEERS = ["aiosmtpd-fsync", "postfix", "smtp-sink"]  # postfix deletes its queue files: after the other durable ones
DURABLE = {"postfix": True, "aiosmtpd-fsync": True, "smtp-sink": False}
DOMAIN = "example.test"


class Unavailable(Exception):
    """A peer that cannot run here (not installed): left out of the table, said why."""


# -- servers ------------------------------------------------------------------------------------------------------
class PrivatePostfix:
    """A private Postfix (its own configuration folder, queue and data below ``work``) listening on ``port`` of
    127.0.0.1, pinned to the server core. /etc/postfix/main.cf names its folder in alternate_config_directories while
    it runs (``postfix -c DIR`` is refused otherwise) and is put back when it stops."""

    SERVICES = [
        "{listen} inet n - n - - smtpd", "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup", "qmgr unix n - n 300 1 qmgr", "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce", "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify", "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap", "smtp unix - - n - - smtp", "relay unix - - n - - smtp",
        "showq unix n - n - - showq", "error unix - - n - 0 error", "retry unix - - n - 0 error",
        "discard unix - - n - 0 discard", "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]  # fmt: skip

    def __init__(self, work: Path, port: int) -> None:
        """Unavailable unless Postfix is installed and this runs as root."""
        if not shutil.which("postfix"):
            raise Unavailable("postfix is missing (apt-get install postfix)")
        if os.geteuid() != 0:
            raise Unavailable("postfix needs root to start")
        self.work, self.port = work, port
        self.etc, self.spool, self.data = (work / d for d in ("postfix-etc", "postfix-spool", "postfix-data"))
        self.started = False
        self.main_cf: str | None = None  # /etc/postfix/main.cf as it was, put back when Postfix stops

    def start(self, settings: str, services: tuple[str, ...] = ()) -> None:
        """Started with ``settings`` (main.cf lines of the benchmark's own) and ``services`` added to master.cf;
        returns once it listens."""
        for folder in (self.etc, self.spool, self.data):
            folder.mkdir(parents=True, exist_ok=True)
        main_cf = Path("/etc/postfix/main.cf")
        text = main_cf.read_text() if main_cf.exists() else "compatibility_level = 3.6\n"
        self.main_cf = text
        lines = [line for line in text.splitlines() if not line.startswith("alternate_config_directories")]
        main_cf.write_text("\n".join(lines + [f"alternate_config_directories = {self.etc}"]) + "\n")
        shutil.chown(self.data, "postfix")
        os.chmod(self.work, 0o755)
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
maillog_file = {self.work}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {self.work}
biff = no
smtputf8_enable = no
message_size_limit = 20000000
{settings}""")
        master = [*self.SERVICES, *services]
        (self.etc / "master.cf").write_text("\n".join(master).format(listen=f"127.0.0.1:{self.port}") + "\n")
        self.started = True
        done = subprocess.run(["postfix", "-c", str(self.etc), "start"], cwd=self.work,
                              preexec_fn=pin_to({SERVER_CORE}), capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise Unavailable(f"postfix did not start: {(done.stderr or done.stdout).strip()[:200]}")
        if not wait_ready(lambda: port_open(self.port), 20):
            raise Unavailable(f"postfix did not start listening on port {self.port}")

    def stop(self) -> None:
        if self.started:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=30)
        if self.main_cf is not None:
            Path("/etc/postfix/main.cf").write_text(self.main_cf)
            self.main_cf = None


class Server:
    def __init__(self, name: str, work: Path, port: int) -> None:
        self.name, self.work, self.port = name, work, port
        self.maildir = work / "Maildir"
        self.proc: subprocess.Popen | None = None
        self.postfix: PrivatePostfix | None = None

    @property
    def durable(self) -> bool:
        return DURABLE.get(self.name, True)

    def command(self) -> list[str]:
        py = sys.executable
        if self.name in SOCKHOP:
            return [py, "-m", "sockhop", "serve", "mail", str(self.maildir), "--domain", DOMAIN, "--catch-all",
                    "--model", self.name, "--workers", "16" if self.name == "pool" else "1",
                    "--listen", f"127.0.0.1:{self.port}",
                    "--max-connections", "1000", "--grace", "2", "--max-size", "10M"]  # fmt: skip
        if self.name == "aiosmtpd-fsync":
            try:
                import aiosmtpd  # noqa: F401
            except ImportError:
                raise Unavailable("aiosmtpd is not installed (pip install aiosmtpd)") from None
            return [py, str(HERE / "peers" / "aiosmtpd_maildir.py"), str(self.port), str(self.maildir), "--fsync"]
        if self.name == "smtp-sink":
            if not shutil.which("smtp-sink"):
                raise Unavailable("smtp-sink is missing (apt-get install postfix)")
            return ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "100"]
        raise ValueError(self.name)

    def start(self) -> None:
        if self.name != "postfix":
            try:
                self.proc = start_server(self.command(), lambda: port_open(self.port))
            except RuntimeError as exc:
                raise Unavailable(f"{exc} (port {self.port})") from None
            return
        self._start_postfix()
        time.sleep(0.3)

    def stop(self) -> None:
        if self.postfix is not None:
            self.postfix.stop()
        if self.proc is not None:
            stop(self.proc)

    def delivered(self) -> list[Path]:
        folders = [self.maildir / "new", self.work / "vmail" / "b" / "Maildir" / "new"]
        return [p for folder in folders if folder.is_dir() for p in folder.iterdir()]

    # Postfix: virtual delivery of b@example.test into a Maildir -- the configuration shared/peers/smtp.sh measured
    # the figures with.
    def _start_postfix(self) -> None:
        self.postfix = PrivatePostfix(self.work, self.port)
        vmail = self.work / "vmail"
        vmail.mkdir(parents=True, exist_ok=True)
        nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        os.chown(vmail, nobody, nogroup)
        self.postfix.start(
            f"""\
myhostname = peer.example.test
mydomain = {DOMAIN}
myorigin = {DOMAIN}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
local_recipient_maps =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = inline:{{ b@{DOMAIN}=b/Maildir/ }}
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nogroup}
""",
            services=("local unix - n n - - local", "virtual unix - n n - - virtual", "lmtp unix - - n - - lmtp"),
        )


# -- load ---------------------------------------------------------------------------------------------------------
def smtp_source(
    port: int, sessions: int, messages: int, size: int, timeout: float, domain: str = DOMAIN
) -> tuple[int, float]:
    """Send ``messages`` of ``size`` bytes over ``sessions`` parallel sessions, from and to ``domain``; (sent,
    seconds). smtp-source stops at the first error, so a clean exit means every message got its 250."""
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f", f"a@{domain}",
           "-t", f"b@{domain}", f"127.0.0.1:{port}"]  # fmt: skip
    start = time.monotonic()
    try:
        done = run_pinned(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 0, time.monotonic() - start
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        print(f"bench:   smtp-source failed: {(done.stderr or done.stdout).strip()[:200]}", file=sys.stderr)
        return 0, elapsed
    return messages, elapsed


def payload_bytes(path: Path) -> int:
    """The body's bytes without line ends (a Maildir keeps LF where SMTP carried CRLF)."""
    data = path.read_bytes()
    body = data.partition(b"\n\n")[2] or data.partition(b"\r\n\r\n")[2]
    return len(body) - body.count(b"\n") - body.count(b"\r")


def check_maildir(server: Server, before: set[Path], sent: int, size: int, wait: float) -> str:
    """Every message that got its 250 is in the Maildir, whole: count the new files, and each holds the whole
    payload (all the same length, and no less than smtp-source's size less its line ends)."""
    if server.name == "smtp-sink":
        return "discarded"
    deadline = time.monotonic() + wait  # Postfix delivers after its 250 (the queue file is what is durable)
    new = set(server.delivered()) - before
    while len(new) < sent and time.monotonic() < deadline:
        time.sleep(0.2)
        new = set(server.delivered()) - before
    lengths = [payload_bytes(p) for p in new]
    whole = bool(lengths) and len(set(lengths)) == 1 and lengths[0] >= size * 0.95
    ok = len(new) == sent and whole
    return f"{'ok' if ok else 'MISMATCH'}: {len(new)}/{sent} files" + ("" if whole else ", not all whole")


def measure(name: str, work: Path, port: int, sessions: list[int], sizes: list[int], messages: int) -> list[dict]:
    rows = []
    work.mkdir()
    server = Server(name, work, port)
    try:
        server.start()
    except Unavailable as exc:
        print(f"bench: {name}: skipped: {exc}", file=sys.stderr)
        server.stop()
        return []
    try:
        fresh = set(server.delivered())
        warm, _ = smtp_source(port, 1, min(messages, 10), 1024, 60)  # warm-up
        # Postfix delivers after its 250: let the warm-up land, or its last message counts in the first figure
        check_maildir(server, fresh, warm, 1024, wait=30)
        for size in sizes:
            for n in sessions:
                before = set(server.delivered())
                sent, seconds = smtp_source(port, n, messages, size, timeout=max(120.0, messages / 5))
                check = check_maildir(server, before, sent, size, wait=30) if sent else "failed"
                rate = sent / seconds if sent and seconds > 0 else 0.0
                print(f"bench:   {name} {n} sessions {size} B: {rate:.0f} msg/s ({check})", file=sys.stderr)
                rows.append({"server": name, "sessions": n, "size": size, "rate": rate, "check": check,
                             "durable": server.durable})  # fmt: skip
    finally:
        server.stop()
    return rows


# -- report -------------------------------------------------------------------------------------------------------
def label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def table(rows: list[dict], messages: int) -> str:
    configs = sorted({(r["size"], r["sessions"]) for r in rows})
    names = list(dict.fromkeys(r["server"] for r in rows))
    rate = {(r["server"], r["size"], r["sessions"]): r for r in rows}
    head = "| server | durable | " + " | ".join(f"{label(s)}, {n} sess." for s, n in configs) + " |"
    lines = [head, "|" + "---|" * (2 + len(configs))]
    for name in names:
        cells = []
        for size, n in configs:
            row = rate.get((name, size, n))
            cells.append(f"{row['rate']:.0f}" + ("" if row["check"].startswith(("ok", "disc")) else " (!)")
                         if row else "-")  # fmt: skip
        durable = "yes" if DURABLE.get(name, True) else "no"
        lines.append(f"| {name} | {durable} | " + " | ".join(cells) + " |")
    peers = [p for p in PEERS if p in names]
    if "eventloop" in names and peers:
        lines += ["", "Ratios (sockhop eventloop / peer):", ""]
        lines.append("| peer | " + " | ".join(f"{label(s)}, {n} sess." for s, n in configs) + " |")
        lines.append("|" + "---|" * (1 + len(configs)))
        for peer in peers:
            cells = []
            for size, n in configs:
                mine, theirs = rate.get(("eventloop", size, n)), rate.get((peer, size, n))
                cells.append(ratio(mine["rate"], theirs["rate"]) if mine and theirs else "-")
            lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    checks = [f"{r['server']} {label(r['size'])} {r['sessions']}: {r['check']}" for r in rows]
    lines += ["", f"{messages} messages per figure. Maildir after each figure: " + "; ".join(checks) + "."]
    return "\n".join(lines)


def plot(plt: Any, rows: list[dict]) -> Any:
    """The report's figure, drawn with pyplot ``plt`` (None: nothing to draw)."""
    if not rows:
        return None
    configs = sorted({(r["size"], r["sessions"]) for r in rows})
    names = list(dict.fromkeys(r["server"] for r in rows))
    rate = {(r["server"], r["size"], r["sessions"]): r["rate"] for r in rows}
    fig, ax = plt.subplots(figsize=(11, 4.5))
    series = [(f"{label(size)}, {n} sessions", [rate.get((name, size, n), 0) for name in names]) for size, n in configs]
    grouped_bars(ax, names, series, ylabel="messages / s", title="SMTP receive (smtp-source): durable except smtp-sink",
                 rotation=20)  # fmt: skip
    return fig


def main() -> int:
    parser = parser_for(__doc__, SOCKHOP + PEERS)
    parser.add_argument("--messages", type=int, default=2000, help="messages per figure (default 2000)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10], help="parallel sessions (default 1 10)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 102400], help="bytes (default 1024 102400)")
    args = parse(parser, quick={"messages": 20, "sessions": [1, 4], "sizes": [1024]})
    need_two_cores("smtp-source")
    need_tool("smtp-source", "postfix")
    rows: list[dict] = []
    # One folder for the whole run, removed only at its end: on ext4 without a journal, a file created soon after
    # thousands were deleted costs a scan past every recently freed inode (ext4's recently_deleted), so removing
    # one server's Maildir before the next server runs would slow whichever runs next.
    with tempfile.TemporaryDirectory(prefix="sockhop-mailbench-") as top:
        os.chmod(top, 0o755)  # Postfix's own users must reach their folders inside it
        for i, name in enumerate(args.only or SOCKHOP + PEERS):
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            rows += measure(name, Path(top) / name, PORT + 10 * i, args.sessions, args.sizes, args.messages)
    write_report(args.out, "mail", "SMTP", table(rows, args.messages), lambda plt: plot(plt, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
