"""The client: message building, dot-stuffing, delivery to a real server nobody here wrote (aiosmtpd, without
PIPELINING) and to sockhop's own (with it), routing by MX with fallback, and the ``sockhop send`` command."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import ssl
import subprocess
import sys

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import given
from hypothesis import strategies as st

from sockhop.mail.client import (
    SendError,
    build_message,
    deliver,
    dot_stuff,
    edit_headers,
    read_data,
    split_headers,
    to_wire,
)
from sockhop.mail.codes import Code
from tests.mail.dnszone import serve_zone
from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.support import require_tool
from tests.tls_certs import LocalCA


def test_dot_stuff():
    assert dot_stuff(b".a\n..b\nc.\n.") == b"..a\r\n...b\r\nc.\r\n..\r\n"
    assert dot_stuff(b"x\ry\r\n") == b"x\r\ny\r\n"
    assert dot_stuff(b"") == b""


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\n", b"\r", b"\r\n", b" x"]), max_size=30).map(b"".join))
def test_dot_stuff_fast_path_as_the_rule(data):
    """LF-only text (the spool's) takes a replace rather than the regexes: the same bytes either way."""
    rule = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    rule += b"\r\n" if rule and not rule.endswith(b"\r\n") else b""
    assert dot_stuff(data) == re.sub(rb"(?m)^\.", b"..", rule)


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


# -- swaks' options: --header, --add-header, --data, --cc, --bcc, -v ----------------------------------------------
def test_headers_as_swaks_takes_them():
    assert split_headers(["Subject: a", "X-A: 1\\nX-B:  2 "]) == [("Subject", "a"), ("X-A", "1"), ("X-B", "2")]
    for bad in ("no colon", "Bad Name: x", ": x"):
        with pytest.raises(SendError, match="give 'Name: value'"):
            split_headers([bad])
    data = b"From: a@b.test\nSubject: old\n  folded on\nX-Keep: 1\nsubject: twice\n\nbody\nSubject: not a header\n"
    edited = edit_headers(data, [("Subject", "new")], [("X-Added", "yes")])
    assert edited == b"From: a@b.test\nSubject: new\nX-Keep: 1\nX-Added: yes\n\nbody\nSubject: not a header\n"
    crlf = b"From: a@b.test\r\n\r\nbody\r\n"
    assert edit_headers(crlf, [("Subject", "s")], []) == b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n"
    assert edit_headers(b"just a body\n", [], [("X-A", "1")]) == b"X-A: 1\n\njust a body\n"
    assert edit_headers(data, [], []) is data


def test_data_as_swaks_reads_it(tmp_path):
    message = tmp_path / "message.eml"
    message.write_bytes(b"Subject: file\n\nbody\n")
    assert read_data(str(message)) == read_data(f"@{message}") == b"Subject: file\n\nbody\n"
    assert read_data("Subject: text\\n\\nbody\\n.\\n") == b"Subject: text\n\nbody\n"  # the closing dot is ours
    assert read_data("@@literal\\n") == b"@literal\n"
    with pytest.raises(SendError, match="cannot read --data /nonexistent: No such file"):
        read_data("/nonexistent")


def raw_delivered(maildir, mailbox: str) -> list[bytes]:
    folder = maildir / mailbox / "new"
    return (
        [p.read_bytes() for p in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)] if folder.is_dir() else []
    )


def without_trace(raw: bytes) -> bytes:
    """A delivered message without the Return-Path and Received: lines the server put on top."""
    lines = raw.split(b"\n")
    while lines and (lines[0].startswith((b"Return-Path:", b"Received:")) or lines[0][:1] in (b" ", b"\t")):
        lines.pop(0)
    return b"\n".join(lines)


def test_send_cc_bcc_and_headers(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path)
    host, port = server.address("mail")
    result = run_send("--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--cc", f"carol@{DOMAIN},erin@{DOMAIN}",
                      "--bcc", f"dave@{DOMAIN}", "--subject", "built", "--header", "Subject: replaced",
                      "--header", "X-Tag: one", "--add-header", "X-Add: a\\nX-Add: b", "--server", f"{host}:{port}",
                      "--body", "hello all")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("delivered via") == 4
    copies = {box: raw_delivered(tmp_path, box) for box in ("bob", "carol", "erin", "dave")}
    assert all(len(raw) == 1 for raw in copies.values())  # dave too: he is in the envelope
    assert len({without_trace(raw[0]) for raw in copies.values()}) == 1  # one message, the same for each
    [msg] = delivered(tmp_path, "dave")
    assert msg["To"] == f"bob@{DOMAIN}" and msg["Cc"] == f"carol@{DOMAIN}, erin@{DOMAIN}"
    assert msg["Bcc"] is None and b"dave" not in without_trace(copies["dave"][0])  # nobody learns of dave
    assert msg.get_all("Subject") == ["replaced"] and msg["X-Tag"] == "one" and msg.get_all("X-Add") == ["a", "b"]
    assert msg.get_content() == "hello all\n"


def test_send_data_is_delivered_byte_for_byte(sockhop_server, tmp_path):
    maildir = tmp_path / "mail"
    server = serve_mail(sockhop_server, maildir)
    host, port = server.address("mail")
    raw = ("From: Ann <ann@sender.test>\nTo: bob@example.test\nSubject: =?utf-8?q?raw?=\nX-Odd:   spaced  \n"
           "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
           ".a leading dot\n..two\n.\nümlaut\n\n\ntrailing blank lines\n\n").encode()  # fmt: skip
    message = tmp_path / "message.eml"
    message.write_bytes(raw)
    common = ["--from", "ann@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}"]
    assert run_send(*common, "--data", str(message)).returncode == 0
    assert run_send(*common, "--data", "-", stdin=raw.decode()).returncode == 0
    assert run_send(*common, "--data", "Subject: one line\\n\\nbody\\n").returncode == 0
    assert (
        run_send(*common, "--data", str(message), "--header", "Subject: new", "--bcc", f"dave@{DOMAIN}").returncode == 0
    )
    from_file, from_stdin, from_text, edited = (without_trace(m) for m in raw_delivered(maildir, "bob"))
    assert from_file == raw and from_stdin == raw
    assert from_text == b"Subject: one line\n\nbody\n"
    assert edited == raw.replace(b"Subject: =?utf-8?q?raw?=", b"Subject: new")
    assert without_trace(raw_delivered(maildir, "dave")[0]) == edited  # the data as given: no Bcc, no Cc added
    refused = run_send(*common, "--data", str(message), "--body", "x")
    assert refused.returncode == 1 and refused.stderr.startswith("sockhop: --data is the whole message: --body")
    missing = run_send(*common, "--data", "/nonexistent")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "cannot read --data" in missing.stderr


def test_send_verbose_shows_the_transcript_as_swaks_does(sockhop_server, tmp_path):
    server = serve_mail(sockhop_server, tmp_path)
    host, port = server.address("mail")
    result = run_send("-v", "--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--to", "eve@elsewhere.test",
                      "--server", f"{host}:{port}", "--body", ".dotted")  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.startswith(f"bob@{DOMAIN}: delivered via")  # the transcript is on standard error only
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        f"=== Trying {host}:{port}...",
        f"=== Connected to {host}.",
        "<-  220 mx.example.test ESMTP sockhop",
    ]
    for line in (" -> MAIL FROM:<me@sender.test> SIZE=", f" -> RCPT TO:<bob@{DOMAIN}>", " -> DATA", " -> ..dotted",
                 " -> .", "<** 550 5.7.1 <eve@elsewhere.test>: relay access denied", "<-  250 2.0.0 Ok: queued as",
                 " -> QUIT", "<-  221 2.0.0 Bye", "=== Connection closed with remote host."):  # fmt: skip
        assert any(x.startswith(line) for x in lines), line
    assert lines[-1] == "sockhop: eve@elsewhere.test: 550 5.7.1 <eve@elsewhere.test>: relay access denied" + (
        f" (from {host}:{port})"
    )
    swaks = subprocess.run([require_tool("swaks"), "--server", host, "--port", str(port), "--to", f"bob@{DOMAIN}",
                            "--from", "me@sender.test", "--helo", "client.test"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    ours = run_send("-v", "--from", "me@sender.test", "--to", f"bob@{DOMAIN}", "--server", f"{host}:{port}",
                    "--helo", "client.test", "--body", "x")  # fmt: skip
    greeting_and_ehlo = [x for x in swaks.stdout.splitlines() if x.startswith(("===", "<-  2", " -> EHLO"))][:10]
    assert greeting_and_ehlo == ours.stderr.splitlines()[:10]  # the same conversation, shown the same way


# -- AUTH (RFC 4954), against aiosmtpd, which speaks it ------------------------------------------------------------
@pytest.fixture
def auth_server(tmp_path):
    """aiosmtpd requiring AUTH (PLAIN or LOGIN, ann / s3cret): ``start(tls=True)`` offers STARTTLS and AUTH only
    after it; ``start(tls=False)``, AUTH in the clear."""
    ca = LocalCA(tmp_path)
    leaf = ca.issue("leaf", ["127.0.0.1", "localhost"])
    controllers, recorder, mechanisms = [], Recorder(), []

    def authenticator(server, session, envelope, mechanism, auth_data):
        mechanisms.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"ann", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd says 535 itself

    def start(tls: bool) -> int:
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(leaf.cert, leaf.key)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=authenticator,
                                auth_required=True, auth_require_tls=tls, tls_context=context)  # fmt: skip
        controller.start()
        controllers.append(controller)
        return port

    yield start, recorder, mechanisms, str(ca.pem)
    for controller in controllers:
        controller.stop()


def test_send_auth_inside_tls(auth_server):
    start, recorder, mechanisms, ca = auth_server
    port = start(tls=True)
    common = ["--from", "ann@sender.test", "--to", "bob@x.test", "--server", f"127.0.0.1:{port}", "--tls", "required",
              "--cacert", ca, "--auth-user", "ann", "--body", "authenticated", "--timeout", "10"]  # fmt: skip
    done = run_send(*common, "--auth-password", "s3cret", "-v")
    assert done.returncode == 0, done.stderr
    assert " ~> AUTH PLAIN AGFubgBzM2NyZXQ=" in done.stderr and "<~  235 2.7.0 Authentication successful" in done.stderr
    assert run_send(*common, "--auth-password", "s3cret", "--auth", "LOGIN").returncode == 0
    assert mechanisms == ["PLAIN", "LOGIN"] and len(recorder.envelopes) == 2
    wrong = run_send(*common, "--auth-password", "wrong")
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    assert f"127.0.0.1:{port}: authentication failed (PLAIN as ann): 535 5.7.8" in wrong.stderr
    refused = run_send(*common, "--auth-password", "s3cret", "--auth", "CRAM-MD5")
    assert refused.returncode == 1 and "sockhop speaks PLAIN and LOGIN" in refused.stderr
    assert len(recorder.envelopes) == 2


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # as this test means to
def test_send_auth_never_in_the_clear_unless_told(auth_server):
    start, recorder, mechanisms, _ = auth_server
    port = start(tls=False)
    common = ["--from", "ann@sender.test", "--to", "bob@x.test", "--server", f"127.0.0.1:{port}", "--auth",
              "--auth-user", "ann", "--auth-password", "s3cret", "--body", "x"]  # fmt: skip
    done = run_send(*common)
    assert done.returncode == 1 and "will not send the password unencrypted" in done.stderr
    assert mechanisms == [] and recorder.envelopes == []
    assert run_send(*common, "--auth-insecure").returncode == 0
    assert mechanisms == ["PLAIN"] and len(recorder.envelopes) == 1
    no_user = run_send("--to", "bob@x.test", "--server", f"127.0.0.1:{port}", "--auth", "--body", "x")
    assert no_user.returncode == 1 and no_user.stderr == "sockhop: --auth needs --auth-user\n"
