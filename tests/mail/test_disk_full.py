"""A full disk: the message gets 452 4.3.1 (try later), nothing half-written stays behind to keep the disk full,
and once there is room again the next message is delivered. On a small tmpfs the test mounts (needs root)."""

from __future__ import annotations

import shutil
import smtplib
import subprocess

import pytest

from tests.mail.support import serve_mail
from tests.support import require_root, require_tool

DISK = "256k"


@pytest.fixture
def small_disk(tmp_path):
    require_root("mounting a small tmpfs")
    mount = require_tool("mount")
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run([mount, "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run([shutil.which("umount") or "umount", str(folder)], check=True)


def leftovers(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent.name == "tmp")


@pytest.mark.parametrize(("model", "sync"), [("eventloop", "batch"), ("thread", "each"), ("prefork", "batch")])
def test_full_disk_is_452_and_leaves_nothing_behind(sockhop_server, small_disk, model, sync):
    maildir = small_disk / "mail"
    server = serve_mail(sockhop_server, maildir, model, "--sync", sync)
    host, port = server.address("mail")
    big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n" + (b"y" * 998 + b"\r\n") * 400  # ~ 400 KB > the disk
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("a@b.test")
        smtp.rcpt("box@example.test")
        code, text = smtp.data(big)
        assert (code, text.split()[0]) == (452, b"4.3.1"), (code, text)
        assert leftovers(maildir) == []  # the partial copy is gone: the disk is free again
        smtp.sendmail("a@b.test", ["box@example.test"], b"Subject: small\r\n\r\nfits\r\n")  # the session goes on
    assert len(list((maildir / "box" / "new").iterdir())) == 1
    assert server.proc.poll() is None
