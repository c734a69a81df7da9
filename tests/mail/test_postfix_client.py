"""Postfix as a submitting client: a private Postfix (its own config, queue and data folders, started by the test)
relays everything to sockhop's submission port with STARTTLS and SASL AUTH, as a smarthost setup does -- a real
MTA's SMTP client against sockhop's AUTH, for each mechanism."""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

import pytest

from sockhop.mail.auth import set_password
from tests.mail.postfix import PrivatePostfix
from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.support import free_port, require_root, require_tool
from tests.tls_certs import LocalCA


def client_postfix(work: Path, relay: int, mechanism: str) -> PrivatePostfix:
    """A Postfix of the test's own, relaying everything to ``relay`` with AUTH (user alice)."""
    return PrivatePostfix(
        work,
        free_port(),
        f"""\
myhostname = client.example.test
myorigin = {DOMAIN}
mydestination =
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay}
smtp_dns_support_level = disabled
smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{relay}=alice:wonderland }}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = {mechanism.lower()}
""",
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_postfix_relays_through_sockhop_submission_with_sasl(sockhop_server, mechanism):
    require_root("a private Postfix")
    require_tool("postfix")
    work = Path(tempfile.mkdtemp(prefix="sockhop-postfix-client-"))  # Postfix's users must reach it: not tmp_path
    os.chmod(work, 0o755)
    postfix = None
    try:
        ca = LocalCA(work)
        issued = ca.issue("server", ["localhost", "127.0.0.1"])
        set_password(work / "users", "alice", "wonderland")
        server = serve_mail(
            sockhop_server, work / "mail", "eventloop", "--tls-cert", str(issued.cert), "--tls-key", str(issued.key),
            "--users", str(work / "users"), "--listen-submission", "127.0.0.1:0", "--spool", str(work / "queue"),
            "--no-delivery",
            announce=2,
        )  # fmt: skip
        submission = server.addresses[("mail", "tcp")][1][1]
        postfix = client_postfix(work / "postfix", submission, mechanism)
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as smtp:
            smtp.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}", "friend@far.test"],
                          f"Subject: via postfix {mechanism}\r\n\r\nhello\r\n".encode())  # fmt: skip
        deadline = time.monotonic() + 60
        while not delivered(work / "mail", "bob") and time.monotonic() < deadline:
            time.sleep(0.2)
        [message] = delivered(work / "mail", "bob")
        assert message["Subject"] == f"via postfix {mechanism}"
        assert " with ESMTPSA " in str(message["Received"]), message["Received"]
        assert "from client.example.test" in str(message["Received"])
        assert len(list((work / "queue" / "queue").iterdir())) == 1  # the remote recipient, queued
        deadline = time.monotonic() + 10
        while postfix.log().count("status=sent") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert postfix.log().count(f"relay=127.0.0.1[127.0.0.1]:{submission}") >= 2, postfix.log()
    finally:
        if postfix is not None:
            postfix.stop()
        shutil.rmtree(work, ignore_errors=True)
