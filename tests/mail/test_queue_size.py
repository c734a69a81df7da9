"""A queue of 100,000 messages: the server starts on it as fast as on an empty one (it reads nothing of the queue
to start or to accept), takes mail at once, and `sockhop queue` lists every message in seconds. (That acceptance
lists no folder per message is proved in test_spool.py; the rate is bench/mailqueue.py's.)"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time

from sockhop.mail.spool import Spool, envelope_line
from tests.mail.support import serve_mail
from tests.support import ROOT

QUEUED = 100_000


def fill(spool: Spool, count: int) -> None:
    """``count`` queue files as acceptance writes them (without the syncs: the test's own set-up)."""
    body = b"Subject: queued\n\n" + b"x" * 500 + b"\n"
    base = 1796000000
    folder = f"{spool.root}/queue/"
    for i in range(count):
        fd = os.open(f"{folder}{base + i}M0P1Q{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, envelope_line("a@sender.test", [f"r{i}@remote.test"], base + i) + body)
        os.close(fd)


def started_in(sockhop_server, tmp_path, spool) -> float:
    begin = time.monotonic()
    server = serve_mail(sockhop_server, tmp_path / "mail", "eventloop", "--spool", str(spool), "--no-delivery",
                        "--relay-networks", "127.0.0.0/8")  # fmt: skip
    took = time.monotonic() - begin
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        smtp.sendmail("a@sender.test", ["late@remote.test"], b"Subject: after\r\n\r\nx\r\n")
    server.stop()
    return took


def test_a_hundred_thousand_queued_cost_neither_start_nor_acceptance(sockhop_server, tmp_path):
    empty = started_in(sockhop_server, tmp_path, tmp_path / "empty")
    spool = Spool(tmp_path / "spool")
    fill(spool, QUEUED)
    full = started_in(sockhop_server, tmp_path, spool.root)
    assert full < empty + 2.0, (empty, full)
    begin = time.monotonic()
    listing = subprocess.run([sys.executable, "-m", "sockhop", "queue", "--spool", str(spool.root)],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    took = time.monotonic() - begin
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[-1].endswith(f"in {QUEUED + 1} Requests.")
    assert took < 30, took
