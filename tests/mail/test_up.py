"""The issue's flow: with ``sockhop up`` running, ``sockhop send --dns ...:5353 --to you@sockhop.test`` asks the
built-in zone for the MX (mail.sockhop.test) and the port (its _smtp._tcp SRV record) and delivers to up's mail."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from sockhop.up import command_name
from tests.mail.support import delivered
from tests.test_up import loopback_host


def test_send_through_up_finds_mx_and_port_by_dns(sockhop_server, tmp_path):
    # `up` uses fixed ports: a loopback address of its own keeps out of the way of anything else
    HOST = loopback_host()  # noqa: N806
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((HOST, 5353 if kind == socket.SOCK_DGRAM else 2525))
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", HOST, "--data", str(data)], announce=2)
    deadline = time.monotonic() + 15  # up announces every listener at once, after all are bound
    while "mail tcp" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"try: echo hello | {command_name()} send --dns {HOST}:5353 --to you@sockhop.test" in server.log()
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "send", "--dns", f"{HOST}:5353", "--to", "you@sockhop.test",
         "--subject", "through up"],
        input="mail and DNS on one machine\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"you@sockhop.test: delivered via {HOST}:2525: 250 ")
    [msg] = delivered(data / "mail", "you")
    assert msg["Subject"] == "through up" and msg.get_content() == "mail and DNS on one machine\n"


def test_up_mail_offers_starttls_and_smtps_with_the_local_ca(sockhop_server, tmp_path):
    """Port 2525 offers STARTTLS with up's own certificate; the SMTPS twin (4465) says ESMTPS in Received; the
    announcement ends with the curl command that trusts up's CA."""
    import smtplib
    import ssl

    HOST = loopback_host()  # noqa: N806
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", HOST, "--data", str(data)], announce=11)
    ca = data / "tls" / "ca.pem"
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate is for localhost/127.0.0.1, not this random loopback address
    message = "From: me@example.test\r\nTo: you@sockhop.test\r\nSubject: {}\r\n\r\nhi\r\n"
    with smtplib.SMTP(HOST, 2525, timeout=15) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("starttls")
        smtp.starttls(context=context)
        smtp.ehlo("client.example")
        assert not smtp.has_extn("starttls")  # once encrypted, not offered again
        smtp.sendmail("me@example.test", ["you@sockhop.test"], message.format("starttls"))
    with smtplib.SMTP_SSL(HOST, 4465, timeout=15, context=context) as smtp:
        smtp.ehlo("client.example")
        smtp.sendmail("me@example.test", ["you@sockhop.test"], message.format("smtps"))
    with smtplib.SMTP(HOST, 2525, timeout=15) as smtp:  # plaintext still delivers (opportunistic, as Postfix)
        smtp.sendmail("me@example.test", ["you@sockhop.test"], message.format("plain"))
    by_subject = {msg["Subject"]: msg["Received"] for msg in delivered(data / "mail", "you")}
    assert " with ESMTPS " in by_subject["starttls"], by_subject
    assert " with ESMTPS " in by_subject["smtps"], by_subject
    assert " with ESMTP " in by_subject["plain"], by_subject
    assert f"curl --cacert {ca} --resolve localhost:8443:{HOST} https://localhost:8443/" in server.log()
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "send", "--server", f"{HOST}:2525", "--to", "you@sockhop.test",
         "--tls", "required", "--cacert", str(ca), "--subject", "required"],
        input="hi\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # `send --tls required` checks the name: this random loopback address is not on the certificate
    assert result.returncode != 0 and "wrong" in result.stderr and "Traceback" not in result.stderr


def test_up_submission_with_the_printed_user_and_password(sockhop_server, tmp_path):
    """Port 5587: STARTTLS, then AUTH with the user and password up printed (its password file holds only the
    scrypt); a login may send anywhere, into up's queue."""
    import re
    import smtplib
    import ssl

    from tests.support import require_tool

    swaks = require_tool("swaks")
    HOST = loopback_host()  # noqa: N806
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", HOST, "--data", str(data)], announce=11)
    match = re.search(r"swaks --server (\S+) --port 5587 --tls --auth PLAIN --auth-user you --auth-password (\S+) ",
                      server.log())  # fmt: skip
    assert match, server.log()
    password = match[2]
    assert password not in (data / "mail-users").read_text()
    done = subprocess.run([swaks, "--server", HOST, "--port", "5587", "--tls", "--auth", "LOGIN", "--auth-user", "you",
                           "--auth-password", password, "--from", "you@sockhop.test", "--to", "you@sockhop.test"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "235 2.7.0" in done.stdout, done.stdout
    context = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
    context.check_hostname = False
    with smtplib.SMTP(HOST, 5587, timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.login("you", password)
        smtp.sendmail("you@sockhop.test", ["friend@far.example"], b"Subject: far\r\n\r\nx\r\n")
    assert len(delivered(data / "mail", "you")) == 1
    listing = subprocess.run([sys.executable, "-m", "sockhop", "queue", "--spool", str(data / "spool")],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert "friend@far.example" in listing.stdout and "you@sockhop.test" in listing.stdout
