"""Postfix as a submitting client: a private Postfix (its own config, queue and data folders, started by the test)
relays everything to sockhop's submission port with STARTTLS and SASL AUTH, as a smarthost setup does -- a real
MTA's SMTP client against sockhop's AUTH, for each mechanism."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sockhop.mail.auth import set_password
from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.support import require_root, require_tool
from tests.tls_certs import LocalCA

MASTER_CF = [
    "{listen} inet n - n - - smtpd", "pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr", "rewrite unix - - n - - trivial-rewrite", "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap", "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp", "relay unix - - n - - smtp", "showq unix n - n - - showq",
    "error unix - - n - 0 error", "retry unix - - n - 0 error", "discard unix - - n - 0 discard",
    "tlsmgr unix - - n 1000? 1 tlsmgr", "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostfix:
    """A Postfix of the test's own, relaying everything to ``relay`` with AUTH (user alice); /etc/postfix/main.cf
    names its folder in alternate_config_directories while it runs (Postfix refuses -c DIR otherwise), and is put
    back after."""

    def __init__(self, work: Path, relay: int, mechanism: str) -> None:
        self.work, self.port = work, free_port()
        self.etc = work / "etc"
        spool, data = work / "spool", work / "data"
        for folder in (self.etc, spool, data):
            folder.mkdir(parents=True)
        shutil.chown(data, "postfix")
        self.main_cf = Path("/etc/postfix/main.cf")
        self.saved = self.main_cf.read_text() if self.main_cf.exists() else None
        kept = [line for line in (self.saved or "").splitlines() if not line.startswith("alternate_config_directories")]
        self.main_cf.parent.mkdir(exist_ok=True)
        self.main_cf.write_text("\n".join(kept + [f"alternate_config_directories = {self.etc}"]) + "\n")
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = client.example.test
myorigin = {DOMAIN}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay}
smtp_dns_support_level = disabled
smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{relay}=alice:wonderland }}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = {mechanism.lower()}
alias_maps =
alias_database =
maillog_file = {work}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {work}
biff = no
""")
        (self.etc / "master.cf").write_text("\n".join(MASTER_CF).format(listen=f"127.0.0.1:{self.port}") + "\n")
        done = subprocess.run(["postfix", "-c", str(self.etc), "start"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            self.restore()
            raise AssertionError(f"postfix did not start: {done.stderr or done.stdout}")

    def log(self) -> str:
        path = self.work / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restore(self) -> None:
        if self.saved is None:
            self.main_cf.unlink(missing_ok=True)
        else:
            self.main_cf.write_text(self.saved)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
        self.restore()


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
        postfix = PrivatePostfix(work / "postfix", submission, mechanism)
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
