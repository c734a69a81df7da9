"""The client: message building, dot-stuffing, delivery to a real server nobody here wrote (aiosmtpd, without
PIPELINING) and to sockhop's own (with it), routing by MX with fallback, and the ``sockhop send`` command."""

from __future__ import annotations

import email
import email.policy
import socket
import subprocess
import sys

import pytest
from aiosmtpd.controller import Controller

from sockhop.mail.client import build_message, deliver, dot_stuff, to_wire
from sockhop.mail.codes import Code
from tests.mail.dnszone import serve_zone
from tests.mail.support import DOMAIN, delivered, serve_mail


def test_dot_stuff():
    assert dot_stuff(b".a\n..b\nc.\n.") == b"..a\r\n...b\r\nc.\r\n..\r\n"
    assert dot_stuff(b"x\ry\r\n") == b"x\r\ny\r\n"
    assert dot_stuff(b"") == b""


def test_build_message_with_attachment(tmp_path):
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    msg = build_message("a@sender.test", ["b@x.test", "c@x.test"], "Hi", "body\n", [attachment])
    assert msg["Date"] and msg["Message-ID"].endswith("@sender.test>")
    assert msg["To"] == "b@x.test, c@x.test"
    parsed = email.message_from_bytes(to_wire(msg, utf8=False), policy=email.policy.default)
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "notes.txt" and part.get_content() == "attached text\n"
    assert b"\r\n" in to_wire(msg, utf8=False)


class Recorder:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address.endswith("@x.test"):
            return "550 5.7.1 not here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def aiosmtpd_server():
    recorder = Recorder()
    with socket.socket() as probe:  # aiosmtpd's start() connects to the port it was given, so it cannot be 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def test_deliver_to_aiosmtpd(aiosmtpd_server):
    recorder, port = aiosmtpd_server
    data = b"Subject: hi\r\n\r\n.leading dot\r\nbye\r\n"
    outcomes = deliver("a@sender.test", ["b@x.test", "c@elsewhere.test"], data, server=f"127.0.0.1:{port}")
    assert [o.delivered for o in outcomes] == [True, False]
    assert outcomes[1].reply.code == Code.MAILBOX_UNAVAILABLE
    [envelope] = recorder.envelopes
    assert envelope.rcpt_tos == ["b@x.test"]
    assert envelope.content.replace(b"\r\n", b"\n") == b"Subject: hi\n\n.leading dot\nbye\n"


def run_send(*args: str, stdin: str = "hello\n") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", "send", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_send_command_pipelined_to_sockhop(sockhop_server, tmp_path):
    maildir = tmp_path / "mail"
    server = serve_mail(sockhop_server, maildir)
    host, port = server.address("mail")
    attachment = tmp_path / "data.bin"
    attachment.write_bytes(bytes(range(256)))
    result = run_send("--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--to", f"zoë@{DOMAIN}",
                      "--subject", "Grüße", "--attach", str(attachment), "--server", f"{host}:{port}",
                      stdin=".starts with a dot\nümlaut\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("delivered via") == 2
    [msg] = delivered(maildir, "bob")
    assert msg["Subject"] == "Grüße" and msg["Message-ID"]
    assert msg.get_body().get_content() == ".starts with a dot\nümlaut\n"
    [part] = list(msg.iter_attachments())
    assert part.get_content() == bytes(range(256))
    assert len(delivered(maildir, "zoë")) == 1


def test_send_reports_each_failed_recipient_and_exits_non_zero(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path)
    host, port = server.address("mail")
    result = run_send("--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--to", "eve@elsewhere.test",
                      "--server", f"{host}:{port}", "--body", "hi")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"sockhop: eve@elsewhere.test: 550 5.7.1 <eve@elsewhere.test>: relay access denied (from 127.0.0.1:{port})"
    ]
    assert len(delivered(tmp_path, "bob")) == 1


def test_send_to_nothing_listening_is_one_line():
    result = run_send("--from", "me@sender.test", "--to", "bob@x.test", "--server", "127.0.0.1:1", "--body", "x")
    assert result.returncode == 1
    assert result.stderr.startswith("sockhop: bob@x.test: cannot connect to 127.0.0.1:1")
    assert "Traceback" not in result.stderr


def test_send_by_mx_falls_back_to_the_next_exchanger(sockhop_server, tmp_path):
    """mx1 (preference 10) is ::1, where nothing listens; mx2 is the server on 127.0.0.1."""
    server = serve_mail(sockhop_server, tmp_path)
    _, port = server.address("mail")
    (tmp_path / "dns").mkdir()
    records = (
        f"{DOMAIN}. IN MX 10 mx1.{DOMAIN}.\n{DOMAIN}. IN MX 20 mx2.{DOMAIN}.\n"
        f"mx1.{DOMAIN}. IN AAAA ::1\nmx2.{DOMAIN}. IN A 127.0.0.1\nnullmx IN MX 0 .\n"
    )
    dns_server = serve_zone(sockhop_server, tmp_path / "dns", records)
    result = run_send("--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--to", "x@nullmx.test",
                      "--to", "y@nowhere.test", "--dns", dns_server, "--port", str(port),
                      "--body", "routed by MX")  # fmt: skip
    assert result.returncode == 1
    assert f"bob@{DOMAIN}: delivered via 127.0.0.1:{port}" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert errors == ["sockhop: x@nullmx.test: nullmx.test: the domain accepts no mail (null MX)",
                      "sockhop: y@nowhere.test: nowhere.test: no such domain"]  # fmt: skip
    [msg] = delivered(tmp_path, "bob")
    assert msg.get_content() == "routed by MX\n"


def test_pipelined_refusals_are_reported_per_recipient(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path, "eventloop", "--max-size", "1k")
    host, port = server.address("mail")
    big = b"Subject: big\r\n\r\n" + b"x" * 70 * 40
    outcomes = deliver("a@b.test", [f"bob@{DOMAIN}", f"carol@{DOMAIN}"], big, server=f"{host}:{port}")
    assert [(o.delivered, o.reply.code) for o in outcomes] == [(False, Code.EXCEEDED_STORAGE)] * 2
    outcomes = deliver("a@b.test", ["x@elsewhere.test"], b"Subject: s\r\n\r\nsmall\r\n", server=f"{host}:{port}")
    assert outcomes[0].reply.code == Code.MAILBOX_UNAVAILABLE
    ok = deliver("a@b.test", [f"bob@{DOMAIN}", "x@elsewhere.test"], b"Subject: s\r\n\r\nsmall\r\n",
                 server=f"{host}:{port}")  # fmt: skip
    assert [o.delivered for o in ok] == [True, False]
    assert len(delivered(tmp_path, "bob")) == 1
