"""``sockhop mailbox``, the one-line errors of the mail commands, and mail in ``sockhop up``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sockhop.mail.maildir import Maildir
from sockhop.mail.protocol import Envelope, Session
from sockhop.service import UpContext
from tests.mail.helpers import parse_all
from tests.support import open_up_plan


def sockhop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=60)


def fill(root: Path) -> None:
    store = Maildir(root, hostname="mx.test")
    session = Session(peer=("127.0.0.1", 1), helo="c.test", esmtp=True)
    for subject in ("first", "second"):
        content = f"From: Alice <a@b.test>\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nSubject: {subject}\n\nhi\n"
        store.deliver(session, Envelope(sender="a@b.test", recipients=["bob@x.test"], content=content.encode()))


def test_mailbox_lists_and_shows(tmp_path):
    fill(tmp_path)
    listing = sockhop("mailbox", str(tmp_path))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 2
    assert "bob" in lines[0] and "Alice <a@b.test>" in lines[0] and lines[0].endswith("first")
    assert lines[1].endswith("second")
    shown = sockhop("mailbox", str(tmp_path / "bob"), "--show", "2")
    assert shown.returncode == 0
    assert shown.stdout.startswith("Return-Path: <a@b.test>\nReceived: from c.test")
    assert shown.stdout.endswith("Subject: second\n\nhi\n")


def test_mailbox_errors_are_one_line(tmp_path):
    fill(tmp_path)
    missing = sockhop("mailbox", str(tmp_path), "--show", "9")
    assert missing.returncode == 1
    assert missing.stderr == "sockhop: there is no message 9: the mailbox holds 2\n"
    nowhere = sockhop("mailbox", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("sockhop: no such folder")


def test_serve_mail_needs_a_domain(tmp_path):
    result = sockhop("serve", "mail", str(tmp_path))
    assert result.returncode == 2 and "--domain" in result.stderr


def test_up_offers_mail_for_sockhop_test(tmp_path):
    listeners, plan = open_up_plan("mail", UpContext(host="127.0.0.1", data=tmp_path))
    try:
        [listener] = listeners
        assert listener.name == "mail"
        assert "--dns 127.0.0.1:5353 --to you@sockhop.test" in plan.try_lines[0]
        protocol = listener.factory()
        out = protocol.connection_made(("127.0.0.1", 1), ("127.0.0.1", 2525)).send
        out += protocol.data_received(b"EHLO c\r\nMAIL FROM:<me@sockhop.test>\r\nRCPT TO:<you@sockhop.test>\r\n"
                                      b"RCPT TO:<x@example.com>\r\n").send  # fmt: skip
        assert [r.code for r in parse_all(b"".join(out))] == [220, 250, 250, 250, 550]
        assert (tmp_path / "mail").is_dir()
    finally:
        for listener in listeners:
            listener.sock.close()
