"""The real server, driven by clients nobody here wrote: swaks and Python's smtplib, under every model."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import time
from email.message import EmailMessage

import pytest

from sockhop.mail.codes import Code
from tests.mail.support import ALL_MODELS, DOMAIN, delivered, serve_mail
from tests.support import require_tool

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("model", ALL_MODELS)
def test_swaks_with_pipelining(sockhop_server, tmp_path, model):
    swaks = require_tool("swaks")
    server = serve_mail(sockhop_server, tmp_path, model)
    host, port = server.address("mail")
    body = "first line\n.a line starting with a dot\n..two dots\nvoilà, 8-bit\n"
    result = subprocess.run(
        [swaks, "--server", host, "--port", str(port), "--pipeline", "--from", "alice@sender.test",
         "--to", f"bob@{DOMAIN},carol@{DOMAIN}", "--header", "Subject: via swaks", "--body", body],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PIPELINING" in result.stdout
    for box in ("bob", "carol"):
        [msg] = delivered(tmp_path, box)
        assert msg["Subject"] == "via swaks"
        assert msg["Return-Path"] == "<alice@sender.test>"
        assert msg.get_payload(decode=True).decode().splitlines()[:4] == body.splitlines()


@pytest.mark.parametrize("model", ALL_MODELS)
def test_smtplib_8bitmime_smtputf8_big_and_many_recipients(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model)
    host, port = server.address("mail")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        code, _ = smtp.ehlo("client.test")
        assert code == Code.OK
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8"):
            assert smtp.has_extn(ext), ext
        # 8BITMIME
        smtp.sendmail("a@sender.test", [f"bob@{DOMAIN}"], "Subject: 8bit\r\n\r\nGrüße aus Köln\r\n".encode(),
                      mail_options=["BODY=8BITMIME"])  # fmt: skip
        # SMTPUTF8: smtplib asks for it because the addresses are not ASCII
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "jörg@sender.test", f"zoë@{DOMAIN}", "ünïcode"
        msg.set_content("hello zoë\n")
        smtp.send_message(msg)
        # a large message: 1 MiB of 76-character lines
        line = b"x" * 74 + b"\r\n"
        big = b"Subject: big\r\n\r\n" + line * (1024 * 1024 // len(line))
        smtp.sendmail("a@sender.test", [f"big@{DOMAIN}"], big)
        # many recipients
        many = [f"user{i}@{DOMAIN}" for i in range(40)]
        assert smtp.sendmail("a@sender.test", many, b"Subject: many\r\n\r\nhi all\r\n") == {}
    [eight] = delivered(tmp_path, "bob")
    assert eight.get_payload(decode=True).decode() == "Grüße aus Köln\n"
    [utf8] = delivered(tmp_path, "zoë")
    assert utf8["Subject"] == "ünïcode" and "with UTF8SMTP" in utf8["Received"]
    [large] = delivered(tmp_path, "big")
    assert large.get_payload().encode() == big.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    assert all(len(delivered(tmp_path, f"user{i}")) == 1 for i in range(40))


def test_error_replies_to_smtplib(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path, "eventloop", "--max-size", "100k", "--max-recipients", "3",
                        "--recipients", "bob,carol")  # fmt: skip
    host, port = server.address("mail")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        assert smtp.docmd("FROB")[0] == Code.SYNTAX_ERROR
        assert smtp.docmd("MAIL", "FROM:<a@b.test>")[0] == Code.BAD_SEQUENCE  # no EHLO yet
        smtp.ehlo("client.test")
        assert smtp.docmd("MAIL", "FROM:nobrackets@b.test")[0] == Code.PARAMETER_SYNTAX
        assert smtp.docmd("VRFY", "bob")[0] == Code.CANNOT_VRFY
        assert smtp.docmd("HELP")[0] == Code.HELP
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("a@b.test", ["someone@elsewhere.test"], b"Subject: relay?\r\n\r\nno\r\n")
        assert refused.value.recipients["someone@elsewhere.test"][0] == Code.MAILBOX_UNAVAILABLE
        assert b"5.7.1" in refused.value.recipients["someone@elsewhere.test"][1]
        smtp.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("a@b.test", [f"eve@{DOMAIN}"], b"Subject: who?\r\n\r\nno\r\n")
        assert refused.value.recipients[f"eve@{DOMAIN}"][0] == Code.MAILBOX_UNAVAILABLE
        smtp.rset()
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:  # refused early, from SIZE=
            smtp.sendmail("a@b.test", [f"bob@{DOMAIN}"], b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 2000)
        assert too_big.value.smtp_code == Code.EXCEEDED_STORAGE
        smtp.rset()
        # too big, found out after DATA (no SIZE= given)
        assert smtp.docmd("MAIL", "FROM:<a@b.test>")[0] == Code.OK
        assert smtp.docmd("RCPT", f"TO:<bob@{DOMAIN}>")[0] == Code.OK
        assert smtp.data((b"y" * 70 + b"\r\n") * 2000)[0] == Code.EXCEEDED_STORAGE
        # too many recipients: the extra ones get 452, the rest is delivered
        rcpts = [f"bob@{DOMAIN}", f"carol@{DOMAIN}", f"postmaster@{DOMAIN}", f"bob@{DOMAIN}"]
        refused_some = smtp.sendmail("a@b.test", rcpts, b"Subject: four\r\n\r\nhi\r\n")
        assert refused_some[f"bob@{DOMAIN}"][0] == Code.INSUFFICIENT_STORAGE
    assert [m["Subject"] for m in delivered(tmp_path, "bob")] == ["four"]


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 20
    while not data.endswith(b"\r\n") and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_421_on_shutdown(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model)
    with socket.create_connection(server.address("mail"), timeout=20) as sock:
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO c.test\r\n")
        assert b"250 " in read_reply(sock)
        server.proc.send_signal(signal.SIGTERM)
        assert read_reply(sock).startswith(b"421 4.3.2 ")
    assert server.proc.wait(15) == 0


@pytest.mark.parametrize("model", ["eventloop", "iterative"])
def test_421_on_timeout(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model, "--idle-timeout", "0.5")
    with socket.create_connection(server.address("mail"), timeout=20) as sock:
        assert read_reply(sock).startswith(b"220 ")
        assert read_reply(sock).startswith(b"421 4.4.2 ")


def test_421_when_over_the_connection_limit(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path, "eventloop", "--max-connections", "1")
    with socket.create_connection(server.address("mail"), timeout=20) as first:
        assert read_reply(first).startswith(b"220 ")
        with socket.create_connection(server.address("mail"), timeout=20) as second:
            assert read_reply(second).startswith(b"421 4.3.2 ")


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_stop_mid_message_lets_it_finish(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model)
    with socket.create_connection(server.address("mail"), timeout=20) as sock:
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(f"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\nDATA\r\n".encode())
        replies = b""
        while b"354 " not in replies:
            replies += read_reply(sock)
        sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(b"second half\r\n.\r\n")
        rest = read_reply(sock)
        if b"421" not in rest:
            rest += read_reply(sock)
        assert rest.startswith(b"250 2.0.0 ") and b"\r\n421 4.3.2 " in rest
    assert server.proc.wait(15) == 0
    [msg] = delivered(tmp_path, "bob")
    assert msg.get_content() == "first half\nsecond half\n"


def test_swaks_without_pipelining_many_recipients_and_a_big_body(sockhop_server, tmp_path):
    swaks = require_tool("swaks")
    server = serve_mail(sockhop_server, tmp_path, "eventloop")
    host, port = server.address("mail")
    body_file = tmp_path / "body.txt"
    body_file.write_bytes(b"".join(b"line %05d of a body of half a megabyte...........................\n" % i
                                   for i in range(8000)))  # fmt: skip
    rcpts = ",".join(f"r{i}@{DOMAIN}" for i in range(30))
    result = subprocess.run(
        [swaks, "--server", host, "--port", str(port), "--from", "a@sender.test", "--to", rcpts,
         "--body", f"@{body_file}", "--suppress-data"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    for i in range(30):
        [msg] = delivered(tmp_path, f"r{i}")
        assert msg.get_payload().encode().rstrip(b"\n") == body_file.read_bytes().rstrip(b"\n")  # swaks adds blanks


def test_ipv6(sockhop_server, tmp_path):
    server = sockhop_server(["serve", "mail", str(tmp_path), "--domain", DOMAIN, "--listen", "[::1]:0"])
    host, port = server.address("mail")
    assert host == "::1"
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.sendmail("a@b.test", [f"bob@{DOMAIN}"], b"Subject: v6\r\n\r\nhi\r\n")
    [msg] = delivered(tmp_path, "bob")
    assert "IPv6:::1" in msg["Received"]
