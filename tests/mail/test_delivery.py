"""Delivery from the queue (the MTA's outbound half), end to end on loopback: a sockhop mail server relays what it
queued to two other sockhop mail servers (on 127.0.0.1 and 127.0.0.2) found by MX in a sockhop DNS zone --
preference order, retries after a 4xx, bounces (RFC 3464, parsed by the email package) after a 5xx, a null MX and an
unreachable destination, and never a bounce for a bounce."""

from __future__ import annotations

import email
import email.policy
import os
import pwd
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.mail.dnszone import ZONE_HEAD
from tests.mail.postfix import PrivatePostfix
from tests.support import ROOT, free_port, require_root, require_tool, start_server
from tests.tls_certs import LocalCA

#: A lifetime long enough for `sockhop queue` (a new process) to start and list a deferred message under load.
RETRY = ["--retry-first", "0.3", "--retry-max", "0.6", "--queue-lifetime", "4"]


def mail_server(folder: Path, domain: str, host: str, *extra: str, port: int = 0):
    return start_server(["serve", "mail", str(folder), "--domain", domain, "--hostname", f"mx.{domain}",
                         "--listen", f"{host}:{port}", *extra])  # fmt: skip


class World:
    """Everyone: the DNS server, the destinations, and the relaying server (``sender``)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers = []
        self.one = self.start(mail_server(tmp / "one", "one.test", "127.0.0.2", "--recipients", "bob,carol",
                                          "--max-recipients", "1"))  # fmt: skip
        self.two = self.start(mail_server(tmp / "two", "two.test", "127.0.0.1", "--domain", "implicit.test"))
        ca = LocalCA(tmp)
        self.ca = ca.pem
        pair = ca.issue("mx.tls", ["mx.tls.test"])
        self.tls = self.start(mail_server(tmp / "tls", "tls.test", "127.0.0.2", "--tls-cert", str(pair.cert),
                                          "--tls-key", str(pair.key)))  # fmt: skip
        self.sender_port = free_port()
        dead = free_port("127.0.0.3")
        self.late_port = free_port("127.0.0.2")
        self.postfix_port = free_port()
        one, two, tls = self.one.address()[1], self.two.address()[1], self.tls.address()[1]
        records = f"""\
tls IN MX 10 mx.tls.test.
mx.tls IN A 127.0.0.2
_smtp._tcp.tls IN SRV 0 0 {tls} mx.tls.test.
notls IN MX 10 mx2.two.test.
_smtp._tcp.notls IN SRV 0 0 {two} mx2.two.test.
pf IN MX 10 mx.pf.test.
mx.pf IN A 127.0.0.1
_smtp._tcp.pf IN SRV 0 0 {self.postfix_port} mx.pf.test.
late IN MX 10 mx.late.test.
mx.late IN A 127.0.0.2
_smtp._tcp.late IN SRV 0 0 {self.late_port} mx.late.test.
one IN MX 10 mx.one.test.
mx.one IN A 127.0.0.2
_smtp._tcp.one IN SRV 0 0 {one} mx.one.test.
two IN MX 20 mx2.two.test.
two IN MX 10 mx1.two.test.
mx1.two IN A 127.0.0.3
mx2.two IN A 127.0.0.1
_smtp._tcp.two IN SRV 0 0 {dead} mx1.two.test.
_smtp._tcp.two IN SRV 0 0 {two} mx2.two.test.
sender IN MX 10 mx.sender.test.
mx.sender IN A 127.0.0.1
_smtp._tcp.sender IN SRV 0 0 {self.sender_port} mx.sender.test.
dead IN MX 10 mx.dead.test.
mx.dead IN A 127.0.0.3
_smtp._tcp.dead IN SRV 0 0 {dead} mx.dead.test.
nomail IN MX 0 .
implicit IN A 127.0.0.1
_smtp._tcp.implicit IN SRV 0 0 {two} implicit.test.
"""
        (tmp / "test.zone").write_text(ZONE_HEAD + records)
        self.dns_server = self.start(start_server(["serve", "dns", str(tmp / "test.zone"), "--listen", "127.0.0.1:0"],
                                                  announce=2))  # fmt: skip
        host, port = self.dns_server.address("dns", "udp")
        self.dns = f"{host}:{port}"
        self.spool = tmp / "spool"
        tls_rules = ["--relay-tls", "tls.test=required", "--relay-tls", "notls.test=required", "--relay-cacert",
                     str(self.ca)]  # fmt: skip
        self.sender = self.start(self.relay("eventloop", tmp / "sender", self.spool, self.sender_port, *tls_rules))

    def relay(self, model: str, maildir: Path, spool: Path, port: int = 0, *extra: str):
        return mail_server(maildir, "sender.test", "127.0.0.1", "--model", model, "--spool", str(spool),
                           "--relay-networks", "127.0.0.0/8", "--dns", self.dns, *RETRY, *extra, port=port)  # fmt: skip

    def start(self, server):
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            if server.proc.stderr:
                server.proc.stderr.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    found = World(tmp_path_factory.mktemp("delivery"))
    yield found
    found.stop()


def submit(server, recipients: list[str], subject: str, sender: str = "alice@sender.test") -> None:
    host, port = server.address()
    head = f"From: {sender or 'MAILER-DAEMON@sender.test'}\r\nTo: {', '.join(recipients)}\r\n"
    body = f"{head}Subject: {subject}\r\n\r\nhi\r\n"
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail(sender, recipients, body.encode())


def arrived(folder: Path, subject: str, count: int = 1, timeout: float = 10.0) -> list[email.message.EmailMessage]:
    """The messages with ``subject`` (in their Subject, or in a bounce's attached headers) in a Maildir folder,
    once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        if (folder / "new").is_dir():
            for path in sorted((folder / "new").iterdir()):
                data = path.read_bytes()
                if subject.encode() in data:
                    found.append(email.message_from_bytes(data, policy=email.policy.default))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def queue_listing(spool: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "sockhop", "queue", "--spool", str(spool)], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)  # fmt: skip
    return done.stdout


def queue_empty(spool: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any((spool / "queue").iterdir()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_relayed_by_mx_and_the_queue_empties(world):
    submit(world.sender, ["bob@one.test"], "relay-1")
    [msg] = arrived(world.tmp / "one" / "bob", "relay-1")
    assert "mx.sender.test" in str(msg["Received"])
    assert queue_empty(world.spool)


def test_mx_in_preference_order_past_a_dead_one(world):
    submit(world.sender, ["zed@two.test"], "pref-1")
    assert arrived(world.tmp / "two" / "zed", "pref-1")


def test_no_mx_means_the_domain_itself(world):
    submit(world.sender, ["ivy@implicit.test"], "implicit-1")
    assert arrived(world.tmp / "two" / "ivy", "implicit-1")


def test_a_4xx_is_retried_and_delivered_once(world):
    # one.test takes one recipient per message (452 4.5.3 for the next): carol waits for the retry
    submit(world.sender, ["bob@one.test", "carol@one.test"], "retry-1")
    assert arrived(world.tmp / "one" / "bob", "retry-1")
    assert arrived(world.tmp / "one" / "carol", "retry-1")
    assert queue_empty(world.spool)
    time.sleep(0.8)  # past another retry: nobody gets it twice
    assert len(arrived(world.tmp / "one" / "bob", "retry-1", timeout=0)) == 1
    assert len(arrived(world.tmp / "one" / "carol", "retry-1", timeout=0)) == 1


def delivery_status(bounce: email.message.EmailMessage) -> list[dict[str, str]]:
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    human, status, headers = bounce.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    return [dict(block) for block in status.get_payload()]


def test_a_5xx_bounces_to_the_sender(world):
    submit(world.sender, ["nobody@one.test"], "bounce-1")
    [bounce] = arrived(world.tmp / "sender" / "alice", "bounce-1")
    assert bounce["From"].addresses[0].username == "MAILER-DAEMON"
    head, rcpt = delivery_status(bounce)
    assert head["Reporting-MTA"] == "dns; mx.sender.test"
    assert rcpt["Final-Recipient"] == "rfc822; nobody@one.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"].startswith("5.")
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550")
    assert "Subject: bounce-1" in list(bounce.iter_parts())[2].get_payload()
    assert queue_empty(world.spool)


def test_a_null_mx_bounces_at_once(world):
    submit(world.sender, ["x@nomail.test"], "nullmx-1")
    [bounce] = arrived(world.tmp / "sender" / "alice", "nullmx-1")
    _, rcpt = delivery_status(bounce)
    assert rcpt["Status"] == "5.1.10"


def test_unreachable_is_retried_then_bounced(world):
    submit(world.sender, ["x@dead.test"], "dead-1")
    time.sleep(0.2)
    listing = queue_listing(world.spool)
    assert "x@dead.test" in listing and "cannot connect" in listing and "next try" in listing, listing
    [bounce] = arrived(world.tmp / "sender" / "alice", "dead-1")
    _, rcpt = delivery_status(bounce)
    assert rcpt["Final-Recipient"] == "rfc822; x@dead.test" and rcpt["Status"] == "5.4.7"  # delivery time expired
    assert queue_empty(world.spool)


def test_never_a_bounce_for_a_bounce(world):
    submit(world.sender, ["nobody@one.test"], "nobounce-1", sender="")
    assert queue_empty(world.spool)
    time.sleep(0.3)
    assert not arrived(world.tmp / "sender", "nobounce-1", timeout=0)
    assert not any(arrived(world.tmp / "sender" / box.name, "nobounce-1", timeout=0)
                   for box in (world.tmp / "sender").iterdir() if box.is_dir())  # fmt: skip


@pytest.mark.parametrize("model", ["thread", "fork", "prefork"])
def test_relay_under_other_models(world, model, tmp_path):
    server = world.relay(
        model, tmp_path / "mail", tmp_path / "spool", 0, *(["--workers", "2"] if model == "prefork" else [])
    )
    try:
        submit(server, ["bob@one.test"], f"model-{model}")
        assert arrived(world.tmp / "one" / "bob", f"model-{model}")
        assert queue_empty(tmp_path / "spool")
    finally:
        server.stop()
        server.proc.stderr.close()


def test_starttls_required_for_a_destination_verifies_it(world):
    submit(world.sender, ["dora@tls.test"], "tls-1")
    [msg] = arrived(world.tmp / "tls" / "dora", "tls-1")
    assert "with ESMTPS" in str(msg["Received"])  # the destination saw TLS


def test_opportunistic_starttls_where_offered(world, tmp_path):
    server = world.relay("eventloop", tmp_path / "mail", tmp_path / "spool")  # no rule: STARTTLS when offered
    try:
        submit(server, ["erin@tls.test"], "tls-2")
        [msg] = arrived(world.tmp / "tls" / "erin", "tls-2")
        assert "with ESMTPS" in str(msg["Received"])
    finally:
        server.stop()
        server.proc.stderr.close()


def test_required_tls_without_starttls_is_not_delivered_in_plaintext(world):
    submit(world.sender, ["x@notls.test"], "notls-1")
    time.sleep(0.2)
    assert "does not offer STARTTLS" in queue_listing(world.spool)
    [bounce] = arrived(world.tmp / "sender" / "alice", "notls-1")
    assert delivery_status(bounce)[1]["Final-Recipient"] == "rfc822; x@notls.test"
    assert not arrived(world.tmp / "two" / "x", "notls-1", timeout=0)


def test_flush_tries_a_deferred_message_now(world, tmp_path):
    spool = tmp_path / "spool"
    server = mail_server(tmp_path / "mail", "sender.test", "127.0.0.1", "--spool", str(spool), "--relay-networks",
                         "127.0.0.0/8", "--dns", world.dns, "--retry-first", "600")  # fmt: skip
    late = None
    try:
        submit(server, ["fay@late.test"], "late-1")
        deadline = time.monotonic() + 10
        while "cannot connect" not in queue_listing(spool) and time.monotonic() < deadline:
            time.sleep(0.1)
        late = mail_server(tmp_path / "late", "late.test", "127.0.0.2", port=world.late_port)
        assert not arrived(tmp_path / "late" / "fay", "late-1", timeout=0.5)  # the next try is ten minutes away
        done = subprocess.run([sys.executable, "-m", "sockhop", "queue", "--spool", str(spool), "--flush"], cwd=ROOT,
                              capture_output=True, text=True, timeout=20)  # fmt: skip
        assert done.returncode == 0 and "1 deferred message(s) due now" in done.stderr
        assert arrived(tmp_path / "late" / "fay", "late-1")
        assert queue_empty(spool)
    finally:
        for one in (server, late):
            if one is not None:
                one.stop()
                one.proc.stderr.close()


def postfix_destination(work: Path, port: int) -> PrivatePostfix:
    """A private Postfix taking mail for pf.test: bob's into a Maildir (virtual delivery), anyone else refused
    550 5.1.1."""
    vmail = work / "vmail"
    vmail.mkdir(parents=True)
    nobody = pwd.getpwnam("nobody")
    os.chown(vmail, nobody.pw_uid, nobody.pw_gid)
    return PrivatePostfix(
        work,
        port,
        f"""\
myhostname = mx.pf.test
mydestination =
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = pf.test
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = inline:{{ bob@pf.test=bob/Maildir/ }}
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
""",
        services=("virtual unix - n n - - virtual",),
    )


def test_postfix_as_the_destination(world):
    require_root("a private Postfix")
    require_tool("postfix")
    work = Path(tempfile.mkdtemp(prefix="sockhop-postfix-dest-"))  # Postfix's users must reach it: not tmp_path
    os.chmod(work, 0o755)
    postfix = None
    try:
        postfix = postfix_destination(work, world.postfix_port)
        submit(world.sender, ["bob@pf.test", "nobody@pf.test"], "postfix-1")
        [msg] = arrived(work / "vmail" / "bob" / "Maildir", "postfix-1", timeout=20)
        assert "mx.sender.test" in str(msg["Received"]) and "ESMTP" in str(msg["Received"])
        [bounce] = arrived(world.tmp / "sender" / "alice", "postfix-1")  # nobody@: Postfix's 550, bounced
        _, rcpt = delivery_status(bounce)
        assert rcpt["Final-Recipient"] == "rfc822; nobody@pf.test" and rcpt["Diagnostic-Code"].startswith("smtp; 550")
        assert rcpt["Remote-MTA"] == "dns; mx.pf.test"
        assert queue_empty(world.spool)
    finally:
        if postfix is not None:
            postfix.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_queued_before_a_restart_goes_on_one_connection(world, tmp_path):
    """Queued by a server that only queues; the next start delivers it -- every message to the destination on one
    connection when the destination may have only one (--relay-concurrency 1)."""
    spool, log = tmp_path / "spool", tmp_path / "messages.log"
    sink = mail_server(tmp_path / "sink", "sink.test", "127.0.0.2", "--message-log", str(log))
    relayhost = f"127.0.0.2:{sink.address()[1]}"
    try:
        first = mail_server(tmp_path / "mail", "sender.test", "127.0.0.1", "--spool", str(spool), "--relay-networks",
                            "127.0.0.0/8", "--no-delivery")  # fmt: skip
        for i in range(3):
            submit(first, ["sam@sink.test"], f"restart-{i}")
        first.stop()
        first.proc.stderr.close()
        assert len(list((spool / "queue").iterdir())) == 3
        again = mail_server(tmp_path / "mail", "sender.test", "127.0.0.1", "--spool", str(spool), "--relay-networks",
                            "127.0.0.0/8", "--relayhost", relayhost, "--relay-concurrency", "1")  # fmt: skip
        try:
            assert len(arrived(tmp_path / "sink" / "sam", "restart-", count=3)) == 3
            assert queue_empty(spool)
        finally:
            again.stop()
            again.proc.stderr.close()
        peers = {line.split()[1] for line in log.read_text().splitlines() if "from=<alice@sender.test>" in line}
        assert len(peers) == 1, log.read_text()  # one client address and port: one connection for all three
    finally:
        sink.stop()
        sink.proc.stderr.close()


def test_sigkill_mid_delivery_loses_nothing_acknowledged(tmp_path):
    """SIGKILL while the queue is being delivered: after a restart on the same spool every message that got its
    250 reaches the destination -- at least once (a duplicate is allowed, a loss is not)."""
    spool = tmp_path / "spool"
    sink = mail_server(tmp_path / "sink", "sink.test", "127.0.0.2")
    relay_args = ["--spool", str(spool), "--relay-networks", "127.0.0.0/8", "--relayhost",
                  f"127.0.0.2:{sink.address()[1]}"]  # fmt: skip
    relay = mail_server(tmp_path / "mail", "sender.test", "127.0.0.1", *relay_args)
    acknowledged: list[str] = []
    again = None
    try:
        host, port = relay.address()
        try:
            with smtplib.SMTP(host, port, timeout=10) as client:
                for i in range(60):
                    client.sendmail("alice@sender.test", ["sam@sink.test"], f"Subject: kill-{i:02}\r\n\r\nx\r\n")
                    acknowledged.append(f"kill-{i:02}")
                    if i == 20:
                        relay.proc.kill()  # mid-burst, with deliveries under way
        except (smtplib.SMTPException, OSError):
            pass
        relay.proc.wait()
        relay.proc.stderr.close()
        assert len(acknowledged) >= 21
        again = mail_server(tmp_path / "mail", "sender.test", "127.0.0.1", *relay_args)
        assert queue_empty(spool, timeout=20)
        got = {m["Subject"] for m in arrived(tmp_path / "sink" / "sam", "kill-", count=len(acknowledged))}
        assert set(acknowledged) <= got, sorted(set(acknowledged) - got)
    finally:
        for one in (again, sink):
            if one is not None:
                one.stop()
                one.proc.stderr.close()
