"""The queue as a user meets it: relaying from --relay-networks and from a login into --spool, `sockhop queue`
listing and changing it, SIGKILL during a burst of queued messages losing nothing acknowledged, a full spool
answered 452 4.3.1 with nothing left behind, aliases from a file (and `sockhop check` naming their mistakes)."""

from __future__ import annotations

import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time

import pytest

from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.mail.test_disk_full import small_disk  # noqa: F401 -- the fixture
from tests.support import ROOT


def sockhop(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, input=input)  # fmt: skip


def queued(spool) -> dict[str, dict]:
    """Queue id -> the envelope line of each file in queue/ and hold/."""
    found = {}
    for folder in ("queue", "hold"):
        for path in (spool / folder).iterdir():
            found[path.name] = json.loads(path.read_bytes().partition(b"\n")[0])
    return found


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_relay_network_mail_is_queued_and_listed(sockhop_server, tmp_path, model):
    spool = tmp_path / "spool"
    server = serve_mail(sockhop_server, tmp_path / "mail", model, "--spool", str(spool), "--no-delivery",
                        "--relay-networks", "127.0.0.0/8", "::1")  # fmt: skip
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        refused = smtp.sendmail("a@sender.test", ["x@remote.test", "y@other.test", f"bob@{DOMAIN}"],
                                b"Subject: relayed\r\n\r\nfar away\r\n")  # fmt: skip
        assert refused == {}
    assert [m["Subject"] for m in delivered(tmp_path / "mail", "bob")] == ["relayed"]
    [(queue_id, envelope)] = queued(spool).items()
    assert envelope["from"] == "a@sender.test" and envelope["to"] == ["x@remote.test", "y@other.test"]
    listing = sockhop("queue", "--spool", str(spool))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[1].startswith(queue_id + " ") and lines[1].endswith("a@sender.test")
    assert "next try: now" in listing.stdout and "x@remote.test" in listing.stdout
    assert lines[-1] == "-- 1 Kbytes in 1 Request."
    assert sockhop("queue", "--spool", str(spool), "--hold", queue_id).returncode == 0
    assert f"{queue_id}!" in sockhop("queue", "--spool", str(spool)).stdout
    assert sockhop("queue", "--spool", str(spool), "--release", "ALL").stderr == "sockhop: release: 1 message(s)\n"
    assert sockhop("queue", "--spool", str(spool), "--flush").returncode == 0
    missing = sockhop("queue", "--spool", str(spool), "--delete", "NOPE")
    assert (missing.returncode, missing.stderr) == (1, "sockhop: no such message: NOPE\n")
    assert sockhop("queue", "--spool", str(spool), "--delete", queue_id).returncode == 0
    assert sockhop("queue", "--spool", str(spool)).stdout == "Mail queue is empty\n"
    nothing = sockhop("queue", "--spool", str(tmp_path / "mail"))
    assert nothing.returncode == 1 and nothing.stderr.startswith("sockhop: ") and "not a spool" in nothing.stderr


def message(tag: str) -> bytes:
    body = b"".join(b"%s line %04d of a queued message\r\n" % (tag.encode(), i) for i in range(200))
    return b"Subject: %s\r\n\r\n%sEND %s\r\n" % (tag.encode(), body, tag.encode())


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_sigkill_during_a_burst_loses_no_acknowledged_queued_message(sockhop_server, tmp_path, model):
    spool = tmp_path / "spool"
    server = serve_mail(sockhop_server, tmp_path / "mail", model, "--spool", str(spool), "--no-delivery",
                        "--relay-networks", "127.0.0.0/8", start_new_session=True)  # fmt: skip
    host, port = server.address("mail")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            tag = f"c{n}m{i}"
            try:
                with smtplib.SMTP(host, port, timeout=10) as smtp:
                    smtp.sendmail("a@sender.test", [f"to{n}@remote.test"], message(tag))
            except (OSError, smtplib.SMTPException):
                return
            with lock:
                acknowledged.append(tag)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.05, 0.5))
    os.killpg(server.pid, signal.SIGKILL)
    server.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert acknowledged, server.log()
    found = set()
    for path in (spool / "queue").iterdir():
        first, _, text = path.read_bytes().partition(b"\n")
        envelope = json.loads(first)
        tag = text.rsplit(b"END ", 1)[-1].strip().decode()
        assert text.endswith(message(tag).replace(b"\r\n", b"\n").partition(b"\n\n")[2]), f"half-written: {path}"
        assert envelope["to"] == [f"to{tag[1]}@remote.test"]
        found.add(tag)
    assert not [tag for tag in acknowledged if tag not in found], "acknowledged but not queued"
    # the server comes back on the same spool at once, whatever it holds
    again = serve_mail(
        sockhop_server,
        tmp_path / "mail",
        model,
        "--spool",
        str(spool),
        "--no-delivery",
        "--relay-networks",
        "127.0.0.0/8",
    )
    with smtplib.SMTP(*again.address("mail"), timeout=30) as smtp:
        smtp.sendmail("a@sender.test", ["late@remote.test"], b"Subject: after\r\n\r\nx\r\n")
    assert len(list((spool / "queue").iterdir())) == len(found) + 1


def test_full_spool_is_452_and_leaves_nothing_behind(sockhop_server, tmp_path, small_disk):  # noqa: F811
    spool = small_disk / "spool"
    server = serve_mail(sockhop_server, tmp_path / "mail", "eventloop", "--spool", str(spool), "--no-delivery",
                        "--relay-networks", "127.0.0.0/8")  # fmt: skip
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 400
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("a@sender.test")
        smtp.rcpt("x@remote.test")
        smtp.rcpt(f"bob@{DOMAIN}")  # its Maildir copy (on another disk) goes too: one message, one answer
        code, text = smtp.data(big)
        assert (code, text.split()[0]) == (452, b"4.3.1"), (code, text)
        smtp.sendmail("a@sender.test", ["x@remote.test"], b"Subject: small\r\n\r\nfits\r\n")
    assert os.listdir(spool / "tmp") == [] and len(os.listdir(spool / "queue")) == 1
    assert delivered(tmp_path / "mail", "bob") == [] and os.listdir(tmp_path / "mail" / "bob" / "tmp") == []


@pytest.mark.parametrize("model", ["eventloop", "fork"])
def test_aliases_expand_local_and_queue_remote(sockhop_server, tmp_path, model):
    aliases = tmp_path / "aliases"
    aliases.write_text("# the team\npostmaster: root\nroot: alice,\n  bob@example.test, carol@remote.test\n")
    spool = tmp_path / "spool"
    server = serve_mail(sockhop_server, tmp_path / "mail", model, "--aliases", str(aliases), "--spool", str(spool),
                        "--no-delivery", "--recipients", "alice,bob")  # fmt: skip
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        smtp.sendmail("a@sender.test", [f"postmaster@{DOMAIN}"], b"Subject: to the team\r\n\r\nhi\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # still only the recipients that exist
            smtp.sendmail("a@sender.test", [f"nobody@{DOMAIN}"], b"Subject: x\r\n\r\nx\r\n")
    for box in ("alice", "bob"):
        assert [m["Subject"] for m in delivered(tmp_path / "mail", box)] == ["to the team"]
    assert [e["to"] for e in queued(spool).values()] == [["carol@remote.test"]]


def test_check_names_alias_and_password_file_mistakes(tmp_path):
    (tmp_path / "aliases").write_text("root: alice\nbob: |/bin/sh\n")
    (tmp_path / "users").write_text("alice:plaintext\n")
    (tmp_path / "sockhop.toml").write_text(
        '[services.mail]\nmaildir = "mail"\ndomain = ["example.test"]\nlisten = ["127.0.0.1:0"]\n'
        'aliases = "aliases"\nusers = "users"\nlisten-submission = ["127.0.0.1:0"]\nrelay-networks = ["10.0.0.0/8"]\n'
    )
    done = sockhop("check", "--config", str(tmp_path / "sockhop.toml"))
    assert done.returncode == 1, done.stdout
    assert "aliases:2: '|/bin/sh': pipes, files and :include: are not supported" in done.stderr
    assert "users:1: expected name:scrypt$...[:addresses]" in done.stderr
    assert "listen-submission: needs --users and --tls-cert/--tls-key: AUTH only under TLS" in done.stderr
    assert done.stderr.splitlines()[-1].endswith("3 mistake(s)")
    assert "Traceback" not in done.stderr
