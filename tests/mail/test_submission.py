"""Submission as users try it: swaks --auth PLAIN/LOGIN --tls and smtplib's login on --listen-submission (STARTTLS,
then AUTH), AUTH over implicit TLS (RFC 8314), a wrong password slowed and refused, and relay attempts without a
login refused under every model."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import time

import pytest

from sockhop.mail.auth import set_password
from tests.mail.support import ALL_MODELS, DOMAIN, delivered, serve_mail
from tests.support import require_tool
from tests.tls_certs import LocalCA


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submission")
    ca = LocalCA(folder)
    issued = ca.issue("server", ["localhost", "127.0.0.1"])
    users = folder / "passwd"
    set_password(users, "alice", "wonderland")
    return {"ca": str(ca.pem), "cert": str(issued.cert), "key": str(issued.key), "users": str(users)}


def serve_submission(sockhop_server, maildir, model, setup, *extra):
    return serve_mail(
        sockhop_server, maildir, model, "--tls-cert", setup["cert"], "--tls-key", setup["key"],
        "--users", setup["users"], "--listen-submission", "127.0.0.1:0", "--auth-delay", "0.3", *extra,
        announce=2 + ("--listen-tls" in extra) + ("--admin" in extra),
    )  # fmt: skip


def submission_port(server) -> int:
    return server.addresses[("mail", "tcp")][1][1]


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_over_starttls(sockhop_server, tmp_path, setup, model, mechanism):
    swaks = require_tool("swaks")
    server = serve_submission(sockhop_server, tmp_path, model, setup)
    port = submission_port(server)
    base = [swaks, "--server", "127.0.0.1", "--port", str(port), "--tls", "--from", f"alice@{DOMAIN}",
            "--to", f"bob@{DOMAIN}", "--auth", mechanism, "--auth-user", "alice"]  # fmt: skip
    result = subprocess.run([*base, "--auth-password", "wonderland", "--header", f"Subject: {mechanism}"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    started = time.monotonic()
    wrong = subprocess.run([*base, "--auth-password", "nope"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0 and "535 5.7.8" in wrong.stdout, wrong.stdout
    assert time.monotonic() - started >= 0.3  # slowed
    [message] = delivered(tmp_path, "bob")
    assert message["Subject"] == mechanism and " with ESMTPSA " in str(message["Received"])


@pytest.mark.parametrize("model", ["eventloop", "fork"])
def test_smtplib_login_starttls_and_implicit_tls(sockhop_server, tmp_path, setup, model):
    server = serve_submission(sockhop_server, tmp_path, model, setup, "--listen-tls", "127.0.0.1:0")
    context = ssl.create_default_context(cafile=setup["ca"])
    with smtplib.SMTP("127.0.0.1", submission_port(server), timeout=30) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")  # not before TLS
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: no\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 530
        smtp.starttls(context=context)
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login("alice", "wonderland")
        with pytest.raises(smtplib.SMTPSenderRefused):
            smtp.sendmail(f"mallory@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: forged\r\n\r\nx\r\n")
        smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: starttls\r\n\r\nx\r\n")
    _, tls_port = server.address("mail", "tls")
    with smtplib.SMTP_SSL("127.0.0.1", tls_port, timeout=30, context=context) as smtp:
        smtp.login("alice", "wonderland")
        smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: implicit\r\n\r\nx\r\n")
    assert sorted(m["Subject"] for m in delivered(tmp_path, "bob")) == ["implicit", "starttls"]


def test_submission_without_certificate_or_users_is_one_line(tmp_path, setup):
    import sys

    from tests.support import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "mail", str(tmp_path), "--domain", DOMAIN,
         "--listen", "127.0.0.1:0", "--listen-submission", "127.0.0.1:0", "--users", setup["users"]],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "sockhop: --listen-submission needs --tls-cert/--tls-key and --users (AUTH only under TLS)"
    ]


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("spool", [False, True])
def test_no_open_relay_under_any_model(sockhop_server, tmp_path, setup, model, spool):
    """Without a login and from outside --relay-networks (here 10.0.0.0/8, which loopback is not), mail for another
    domain is refused 5.7.1 on the MTA port; a login on the submission port may relay -- into the queue, so only
    when there is one."""
    queue = ["--spool", str(tmp_path / "spool"), "--no-delivery"] if spool else []
    server = serve_submission(sockhop_server, tmp_path / "mail", model, setup, "--relay-networks", "10.0.0.0/8", *queue)
    with smtplib.SMTP(*server.address("mail"), timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("spammer@elsewhere.test")
        code, text = smtp.rcpt("victim@elsewhere.test")
        assert (code, text.split()[0]) == (550, b"5.7.1"), text
        assert smtp.rcpt(f"bob@{DOMAIN}")[0] == 250
    with smtplib.SMTP("127.0.0.1", submission_port(server), timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=setup["ca"]))
        smtp.login("alice", "wonderland")
        smtp.mail(f"alice@{DOMAIN}")
        code, text = smtp.rcpt("friend@elsewhere.test")
        assert (code, text.split()[0]) == ((250, b"2.1.5") if spool else (550, b"5.7.1")), text
        if spool:
            assert smtp.data(b"Subject: far\r\n\r\nx\r\n")[0] == 250
    if spool:
        assert len(list((tmp_path / "spool" / "queue").iterdir())) == 1


def test_failed_logins_counted_on_metrics(sockhop_server, tmp_path, setup):
    from tests.prod.test_admin import scrape, value

    server = serve_submission(sockhop_server, tmp_path, "eventloop", setup, "--admin", "127.0.0.1:0")
    context = ssl.create_default_context(cafile=setup["ca"])
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", submission_port(server), timeout=30) as smtp:
            smtp.starttls(context=context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("alice", "guess")
    samples = scrape(*server.address("admin"))
    assert (
        value(
            samples, "sockhop_smtp_messages_total", service="mail", model="eventloop", result="login-failed", code="535"
        )
        == 4
    )  # fmt: skip -- smtplib tries each mechanism offered: PLAIN, then LOGIN
    assert "failed login for 'alice' (2 on this connection" in server.log()  # both in one connection, then on


@pytest.mark.parametrize("model", ALL_MODELS)
def test_a_wrong_password_then_the_right_one_on_one_connection(sockhop_server, tmp_path, setup, model):
    server = serve_submission(sockhop_server, tmp_path, model, setup)
    with smtplib.SMTP("127.0.0.1", submission_port(server), timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=setup["ca"]))
        smtp.ehlo()
        smtp.user, smtp.password = "alice", "guess"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=True)
        assert failed.value.smtp_code == 535
        smtp.user, smtp.password = "alice", "wonderland"
        assert smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)[0] == 235
        smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: second try\r\n\r\nx\r\n")
    assert [m["Subject"] for m in delivered(tmp_path, "bob")] == ["second try"]


@pytest.mark.parametrize("model", ["eventloop", "prefork"])
def test_a_delayed_login_holds_up_no_one_else(sockhop_server, tmp_path, setup, model):
    """Many clients guessing at once, each waiting out a 3 s delay: meanwhile everyone else is served at once (the
    delay is a timer, not a sleeping thread or a blocked loop)."""
    import threading

    server = serve_submission(sockhop_server, tmp_path, model, setup, "--auth-delay", "3")
    port = submission_port(server)
    context = ssl.create_default_context(cafile=setup["ca"])
    started = threading.Barrier(9)
    answers: list[int] = []

    def guess() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.ehlo()
            started.wait()
            smtp.user, smtp.password = "alice", "guess"
            try:
                smtp.auth("PLAIN", smtp.auth_plain)
            except smtplib.SMTPAuthenticationError as exc:
                answers.append(exc.smtp_code)

    guessers = [threading.Thread(target=guess) for _ in range(8)]
    for t in guessers:
        t.start()
    started.wait()
    time.sleep(0.5)  # every guess is in its delay now
    begin = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice", "wonderland")
        smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], b"Subject: not held up\r\n\r\nx\r\n")
    assert time.monotonic() - begin < 2.0
    for t in guessers:
        t.join(30)
    assert answers == [535] * 8
