"""Results by status as a user sees them on /metrics: curl's 200s and 404s, dig's NOERROR and NXDOMAIN over UDP
and TCP, smtplib's accepted message and refused recipient -- counted under one process and under two prefork
workers (their counts add up), parsed with prometheus_client's own parser."""

from __future__ import annotations

import smtplib
import subprocess
from email.message import EmailMessage

import pytest

from tests.dns.zones import write_zone
from tests.mail.support import DOMAIN, delivered
from tests.prod.helpers import site_saying
from tests.prod.test_admin import scrape, value
from tests.support import require_tool

MODELS = ["eventloop", "prefork"]


def admin_server(sockhop_server, args: list[str], model: str, announce: int):
    return sockhop_server([*args, "--listen", "127.0.0.1:0", "--model", model, "--workers", "2",
                           "--admin", "127.0.0.1:0"], announce=announce)  # fmt: skip


@pytest.mark.interop
@pytest.mark.parametrize("model", MODELS)
def test_http_requests_by_status(sockhop_server, tmp_path, model):
    curl = require_tool("curl")
    site = site_saying(tmp_path / "site", "here")
    server = admin_server(sockhop_server, ["serve", "web", str(site), "--no-access-log"], model, announce=2)
    host, port = server.address("web")
    # One curl, several URLs: one keep-alive connection (the fast lane for the repeats), then new connections.
    urls = [f"http://{host}:{port}/who.txt"] * 5 + [f"http://{host}:{port}/missing"] * 2
    for _ in range(2):
        outputs = [arg for url in urls for arg in ("-o", "/dev/null", url)]
        done = subprocess.run([curl, "-s", "-w", "%{http_code}\\n", *outputs],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.stdout.split() == ["200"] * 5 + ["404"] * 2
    done = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "BREW", urls[0]],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.stdout == "501"
    samples = scrape(*server.address("admin"))
    labels = {"service": "web", "model": model}
    assert value(samples, "sockhop_http_requests_total", code="200", **labels) == 10
    assert value(samples, "sockhop_http_requests_total", code="404", **labels) == 4
    assert value(samples, "sockhop_http_requests_total", code="501", **labels) == 1


@pytest.mark.interop
@pytest.mark.parametrize("model", MODELS)
def test_dns_queries_by_rcode_over_udp_and_tcp(sockhop_server, tmp_path, model):
    dig = require_tool("dig")
    zone = write_zone(tmp_path)
    server = admin_server(sockhop_server, ["serve", "dns", str(zone)], model, announce=3)
    host, port = server.address("dns", "udp")

    def ask(name: str, *flags: str) -> str:
        done = subprocess.run([dig, f"@{host}", "-p", str(port), "+tries=1", "+time=5", *flags, name, "A"],
                              capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        return done.stdout

    for _ in range(3):  # the repeats come from the reply cache: counted all the same
        assert "status: NOERROR" in ask("www.example.com")
    assert "status: NXDOMAIN" in ask("nothing.example.com")
    assert "status: NOERROR" in ask("www.example.com", "+tcp")
    for _ in range(2):
        assert "status: NXDOMAIN" in ask("nothing.example.com", "+tcp")
    assert "status: REFUSED" in ask("www.example.org")
    assert "status: BADVERS" in ask("www.example.com", "+edns=1", "+noednsneg")  # an extended rcode (16)
    samples = scrape(*server.address("admin"))
    labels = {"service": "dns", "model": model}
    name = "sockhop_dns_queries_total"
    assert value(samples, name, proto="udp", rcode="NOERROR", **labels) == 3
    assert value(samples, name, proto="udp", rcode="NXDOMAIN", **labels) == 1
    assert value(samples, name, proto="udp", rcode="REFUSED", **labels) == 1
    assert value(samples, name, proto="udp", rcode="BADVERS", **labels) == 1
    assert value(samples, name, proto="tcp", rcode="NOERROR", **labels) == 1
    assert value(samples, name, proto="tcp", rcode="NXDOMAIN", **labels) == 2


@pytest.mark.parametrize("model", MODELS)
def test_mail_messages_by_result(sockhop_server, tmp_path, model):
    maildir = tmp_path / "mail"
    args = ["serve", "mail", str(maildir), "--domain", DOMAIN, "--recipients", "alice", "--max-size", "2000"]
    server = admin_server(sockhop_server, args, model, announce=2)
    host, port = server.address("mail")
    message = EmailMessage()
    message["From"] = f"bob@{DOMAIN}"
    message["Subject"] = "counted"
    message.set_content("hello\n")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        assert smtp.send_message(message, to_addrs=[f"alice@{DOMAIN}", f"nobody@{DOMAIN}"]) == {
            f"nobody@{DOMAIN}": (550, b"5.1.1 <nobody@example.test>: no such user here")
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.send_message(message, to_addrs=[f"ghost@{DOMAIN}"])
    with smtplib.SMTP(host, port, timeout=30) as smtp:  # a second connection: maybe the other worker
        smtp.send_message(message, to_addrs=[f"alice@{DOMAIN}"])
        big = EmailMessage()
        big.set_content("x" * 3000)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE= says it at MAIL FROM
            smtp.sendmail(f"bob@{DOMAIN}", [f"alice@{DOMAIN}"], big.as_bytes())
        assert refused.value.smtp_code == 552
    assert len(delivered(maildir, "alice")) == 2
    samples = scrape(*server.address("admin"))
    labels = {"service": "mail", "model": model}
    name = "sockhop_smtp_messages_total"
    assert value(samples, name, result="accepted", code="250", **labels) == 2
    assert value(samples, name, result="refused", code="550", **labels) == 2
    assert value(samples, name, result="refused", code="552", **labels) == 1
