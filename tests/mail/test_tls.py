"""STARTTLS (RFC 3207) and SMTPS: swaks and smtplib against the real server under several models, no command
injection across the STARTTLS boundary, and ``sockhop send --tls`` with certificates that verify and that do not."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess

import pytest

from sockhop.engine.protocol import START_TLS
from sockhop.mail.codes import Code
from sockhop.mail.protocol import MailPolicy, State
from tests.mail.helpers import Conversation
from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.mail.test_client import run_send
from tests.support import require_tool
from tests.tls_certs import LocalCA

MODELS = ["eventloop", "thread", "prefork", "fork"]
TLS_POLICY = MailPolicy(hostname="mx.example.test", domains=frozenset({DOMAIN}), starttls=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    ca = LocalCA(folder)
    return {
        "ca": str(ca.pem),
        "good": ca.issue("good", ["localhost", "127.0.0.1"]),
        "wrong": ca.issue("wrong", ["other.test"]),
        "expired": ca.issue("expired", ["localhost", "127.0.0.1"], expired=True),
    }


def serve_tls(sockhop_server, maildir, model, issued, *extra):
    return serve_mail(sockhop_server, maildir, model, "--tls-cert", str(issued.cert), "--tls-key", str(issued.key),
                      *extra, announce=1 + ("--listen-tls" in extra))  # fmt: skip


def read_reply(sock) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# -- the protocol ------------------------------------------------------------------------------------------------
def test_starttls_offered_only_with_a_certificate_and_not_over_tls():
    plain = Conversation()
    plain.feed(b"EHLO c.test\r\nSTARTTLS\r\n")
    assert "STARTTLS" not in plain.replies()[1].lines and plain.codes()[-1] == Code.NOT_IMPLEMENTED
    conv = Conversation(TLS_POLICY)
    conv.feed(b"EHLO c.test\r\n")
    assert "STARTTLS" in conv.replies()[1].lines


def test_starttls_switches_discards_what_follows_and_starts_over():
    conv = Conversation(TLS_POLICY)
    conv.feed(b"EHLO c.test\r\n")
    reply = conv.server.data_received(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@example.test>\r\n")
    assert reply.send[-1] is START_TLS and reply.send[:-1] == (b"220 2.0.0 Ready to start TLS\r\n",)
    assert conv.server.state is State.START and not conv.server.buffer and conv.server.session.tls
    assert conv.server.session.helo == ""
    conv.feed(b"MAIL FROM:<a@b.test>\r\nEHLO c.test\r\nSTARTTLS\r\n")
    replies = conv.replies()
    assert replies[-3].code == Code.BAD_SEQUENCE  # EHLO first, again
    assert "STARTTLS" not in replies[-2].lines
    assert (replies[-1].code, replies[-1].lines[0]) == (Code.BAD_SEQUENCE, "TLS already active")


def test_starttls_refused_inside_a_transaction():
    conv = Conversation(TLS_POLICY)
    conv.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nSTARTTLS\r\nSTARTTLS x\r\n")
    assert conv.codes()[-2:] == [Code.BAD_SEQUENCE, Code.BAD_SEQUENCE]


# -- real clients --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_swaks_starttls_and_smtps(sockhop_server, tmp_path, certs, model):
    swaks = require_tool("swaks")
    server = serve_tls(sockhop_server, tmp_path, model, certs["good"], "--listen-tls", "127.0.0.1:0")
    host, port = server.address("mail")
    _, tls_port = server.address("mail", "tls")
    for how, where in (("--tls", port), ("--tls-on-connect", tls_port)):
        result = subprocess.run(
            [swaks, "--server", host, "--port", str(where), how, "--from", "a@sender.test", "--to", f"bob@{DOMAIN}",
             "--header", f"Subject: swaks {how}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "TLS started" in result.stdout
    messages = delivered(tmp_path, "bob")
    assert sorted(m["Subject"] for m in messages) == ["swaks --tls", "swaks --tls-on-connect"]
    assert all(" with ESMTPS " in str(m["Received"]) for m in messages)


@pytest.mark.parametrize("model", MODELS)
def test_smtplib_starttls_and_smtp_ssl_verified(sockhop_server, tmp_path, certs, model):
    server = serve_tls(sockhop_server, tmp_path, model, certs["good"], "--listen-tls", "127.0.0.1:0")
    host, port = server.address("mail")
    _, tls_port = server.address("mail", "tls")
    context = ssl.create_default_context(cafile=certs["ca"])
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        code, text = smtp.starttls(context=context)
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        smtp.sendmail("a@sender.test", [f"bob@{DOMAIN}"], b"Subject: starttls\r\n\r\nsecret\r\n")
        assert smtp.docmd("STARTTLS") == (Code.BAD_SEQUENCE, b"5.5.1 TLS already active")  # once is all
    with smtplib.SMTP_SSL(host, tls_port, timeout=30, context=context) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        smtp.sendmail("a@sender.test", [f"bob@{DOMAIN}"], b"Subject: smtps\r\n\r\nsecret\r\n")
    assert sorted(m["Subject"] for m in delivered(tmp_path, "bob")) == ["smtps", "starttls"]


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_commands_pipelined_after_starttls_are_discarded(sockhop_server, tmp_path, certs, model):
    server = serve_tls(sockhop_server, tmp_path, model, certs["good"])
    context = ssl.create_default_context(cafile=certs["ca"])
    with socket.create_connection(server.address("mail"), timeout=30) as raw:
        assert read_reply(raw).startswith(b"220 ")
        raw.sendall(b"EHLO c.test\r\n")
        assert b"STARTTLS" in read_reply(raw)
        # the injection: a transaction sent in plaintext behind STARTTLS, in the same packet
        raw.sendall(f"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\n".encode())
        assert read_reply(raw) == b"220 2.0.0 Ready to start TLS\r\n"
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"EHLO c.test\r\n")
            assert read_reply(tls).startswith(b"250-")
            tls.sendall(b"DATA\r\n")  # had the MAIL and RCPT counted, this would be 354
            assert read_reply(tls).startswith(b"503 5.5.1 ")
            tls.sendall(b"QUIT\r\n")
            assert read_reply(tls).startswith(b"221 ")
    assert delivered(tmp_path, "bob") == []


def test_plaintext_after_starttls_fails_the_handshake_not_the_server(sockhop_server, tmp_path, certs):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs["good"])
    with socket.create_connection(server.address("mail"), timeout=30) as raw:
        read_reply(raw)
        raw.sendall(b"EHLO c.test\r\n")
        read_reply(raw)
        raw.sendall(b"STARTTLS\r\n")
        assert read_reply(raw).startswith(b"220 ")
        raw.sendall(f"MAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\n".encode())
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
        assert b"250" not in rest  # a TLS alert at most, then the close
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        assert smtp.noop()[0] == Code.OK  # and the server serves on


# -- sockhop send --tls ------------------------------------------------------------------------------------------
def test_send_tls_required_verifies_and_delivers(sockhop_server, tmp_path, certs):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs["good"])
    host, port = server.address("mail")
    result = run_send("--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}",
                      "--tls", "required", "--cacert", certs["ca"], "--body", "over TLS")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [msg] = delivered(tmp_path, "bob")
    assert " with ESMTPS " in str(msg["Received"])


@pytest.mark.parametrize(
    ("cert", "cacert", "problem"),
    [("wrong", True, "wrong address"), ("expired", True, "expired"), ("good", False, "untrusted")],
)
def test_send_tls_required_certificate_errors_are_one_line(sockhop_server, tmp_path, certs, cert, cacert, problem):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs[cert])
    host, port = server.address("mail")
    extra = ["--cacert", certs["ca"]] if cacert else []
    result = run_send("--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}",
                      "--tls", "required", *extra, "--body", "x")  # fmt: skip
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"sockhop: bob@{DOMAIN}: {host}:{port}: TLS certificate rejected: {problem}"), line
    assert delivered(tmp_path, "bob") == []


def test_send_wrong_name_by_host_name(sockhop_server, tmp_path, certs):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs["wrong"])
    _, port = server.address("mail")
    result = run_send("--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"localhost:{port}",
                      "--tls", "required", "--cacert", certs["ca"], "--body", "x")  # fmt: skip
    assert result.returncode == 1 and "TLS certificate rejected: wrong name" in result.stderr, result.stderr


def test_send_tls_modes_against_a_server_without_starttls(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path)
    host, port = server.address("mail")
    common = ["--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}", "--body", "x"]
    required = run_send(*common, "--tls", "required")
    assert required.returncode == 1
    assert (
        required.stderr.strip() == f"sockhop: bob@{DOMAIN}: {host}:{port} does not offer STARTTLS, and --tls required"
    )
    assert run_send(*common).returncode == 0  # opportunistic: plaintext when not offered
    assert len(delivered(tmp_path, "bob")) == 1


def test_send_opportunistic_encrypts_and_off_does_not(sockhop_server, tmp_path, certs):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs["wrong"])  # unverifiable: still encrypted
    host, port = server.address("mail")
    common = ["--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}"]
    assert run_send(*common, "--subject", "opportunistic", "--body", "x").returncode == 0
    assert run_send(*common, "--subject", "off", "--tls", "off", "--body", "x").returncode == 0
    received = {m["Subject"]: str(m["Received"]) for m in delivered(tmp_path, "bob")}
    assert " with ESMTPS " in received["opportunistic"] and " with ESMTP " in received["off"]


def test_send_verbose_shows_tls_as_swaks_does(sockhop_server, tmp_path, certs):
    server = serve_tls(sockhop_server, tmp_path, "eventloop", certs["good"])
    host, port = server.address("mail")
    result = run_send("-v", "--from", "a@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}",
                      "--tls", "required", "--cacert", certs["ca"], "--body", "x")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    started = next(i for i, line in enumerate(lines) if line.startswith("=== TLS started with cipher TLSv1."))
    assert lines[started - 2 : started] == [" -> STARTTLS", "<-  220 2.0.0 Ready to start TLS"]
    assert lines[started + 1] == " ~> EHLO " + lines[started + 1].split()[-1]  # after the handshake: ~ for -
    assert "<~  250 2.0.0 Ok: queued as" in result.stderr and " -> MAIL" not in result.stderr
