"""`sockhop up` (no file) with the production options of `sockhop serve`, as a user tries them: --admin counts every
service under its own name, --log-format json shapes the log, --user drops to that user once everything is bound
and hands the data folder over; with --config those flags are refused (they go in the file)."""

from __future__ import annotations

import json
import pwd
import shutil
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.prod.helpers import fetch
from tests.prod.test_admin import scrape, value
from tests.prod.test_privileges import assert_nobody
from tests.support import ROOT, require_root, require_tool
from tests.test_up import loopback_host

ANNOUNCED = 7  # echo tcp+udp, web, dns udp+tcp, mail, admin (no TLS)


def send(host: str, to: str) -> dict:
    with smtplib.SMTP(host, 2525, timeout=30) as smtp:
        return smtp.sendmail("me@example.org", [to], b"Subject: up\r\n\r\nhello\r\n")


@pytest.mark.interop
def test_up_with_admin_counts_every_service_and_logs_json(sockhop_server, tmp_path):
    dig = require_tool("dig")
    host = loopback_host()
    up = sockhop_server(["-v", "up", "--host", host, "--data", str(tmp_path / "data"), "--no-tls", "--model",
                         "prefork", "--workers", "2", "--admin", "127.0.0.1:0", "--log-format", "json"],
                        announce=ANNOUNCED, timeout=60)  # fmt: skip
    assert fetch(host, 8080, "/")[0] == 200
    assert fetch(host, 8080, "/missing")[0] == 404
    for name, status in (("www.sockhop.test", "NOERROR"), ("nothing.sockhop.test", "NXDOMAIN")):
        done = subprocess.run([dig, f"@{host}", "-p", "5353", "+tries=1", "+time=5", name, "A"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert f"status: {status}" in done.stdout
    assert send(host, "you@sockhop.test") == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(host, "you@elsewhere.example")
    samples = scrape(*up.address("admin"))
    model = {"model": "prefork"}
    assert value(samples, "sockhop_http_requests_total", service="web", code="200", **model) == 1
    assert value(samples, "sockhop_http_requests_total", service="web", code="404", **model) == 1
    assert value(samples, "sockhop_dns_queries_total", service="dns", proto="udp", rcode="NOERROR", **model) == 1
    assert value(samples, "sockhop_dns_queries_total", service="dns", proto="udp", rcode="NXDOMAIN", **model) == 1
    assert value(samples, "sockhop_smtp_messages_total", service="mail", result="accepted", code="250", **model) == 1
    assert value(samples, "sockhop_smtp_messages_total", service="mail", result="refused", code="550", **model) == 1
    assert value(samples, "sockhop_connections_total", service="web", **model) == 2
    up.stop()
    entries = [json.loads(line) for line in up.lines if line.startswith("{")]
    assert entries and all({"time", "level", "pid", "logger", "message"} <= set(e) for e in entries), up.log()


def test_up_with_user_serves_as_that_user(sockhop_server):
    require_root("dropping privileges")
    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="sockhop-up-user-"))
    try:
        folder.chmod(0o755)
        data = folder / "data"
        host = loopback_host()
        up = sockhop_server(["up", "--host", host, "--data", str(data), "--user", "nobody"], announce=10,
                            timeout=60)  # fmt: skip
        assert_nobody(up.pid)
        assert send(host, "you@sockhop.test") == {}
        (message,) = list((data / "mail" / "you" / "new").iterdir())
        assert message.stat().st_uid == nobody.pw_uid
        assert (data / "tls" / "server.key").stat().st_uid == nobody.pw_uid  # SIGHUP re-reads it as nobody
        assert fetch(host, 8080, "/")[0] == 200
        assert up.stop() == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_with_config_the_production_flags_go_in_the_file(tmp_path):
    (tmp_path / "sockhop.toml").write_text('[services.echo]\nlisten = ["127.0.0.1:0"]\n')
    done = subprocess.run([sys.executable, "-m", "sockhop", "up", "--config", str(tmp_path / "sockhop.toml"),
                           "--admin", "127.0.0.1:0"], capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "sockhop: with --config, --admin goes in the file, for each service (as admin = ...)\n"
