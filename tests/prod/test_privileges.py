"""--user as a user tries it: started as root, sockhop binds (a privileged port too), then every serving process --
master, prefork workers, forked children -- runs as that user and group, as /proc says. Data folders are handed to
that user. Root on a privileged port without --user is refused."""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.prod.helpers import fetch, site_saying
from tests.support import cannot_run, require_root


@pytest.fixture(autouse=True)
def as_root():
    """Every test here starts sockhop as root: skipped elsewhere, a failure in CI (which runs as root)."""
    require_root("dropping privileges")


NOBODY = pwd.getpwnam("nobody")


def ids(pid: int) -> tuple[list[int], list[int], list[int]]:
    """Real, effective, saved, fs uids and gids, and supplementary groups, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields["Uid"], fields["Gid"], fields["Groups"]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def free_privileged_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    cannot_run("no free privileged port")


@pytest.fixture
def open_tmp():
    """A folder every user can read (pytest's own tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="sockhop-priv-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_nobody(pid: int) -> None:
    uids, gids, groups = ids(pid)
    assert uids == [NOBODY.pw_uid] * 4, uids
    assert gids == [NOBODY.pw_gid] * 4, gids
    assert set(groups) <= set(os.getgrouplist("nobody", NOBODY.pw_gid))
    assert 0 not in groups


@pytest.mark.parametrize("model", ["eventloop", "thread", "pool", "prefork", "fork", "iterative"])
def test_binds_a_privileged_port_then_serves_as_the_user(sockhop_server, open_tmp, model):
    port = free_privileged_port()
    site = site_saying(open_tmp / "site", "dropped")
    server = sockhop_server(["serve", "web", str(site), "--listen", f"127.0.0.1:{port}", "--no-access-log",
                             "--model", model, "--workers", "2", "--user", "nobody"])  # fmt: skip
    assert server.address("web") == ("127.0.0.1", port)
    assert fetch("127.0.0.1", port) == (200, b"dropped")
    assert_nobody(server.pid)
    if model == "prefork":
        deadline = time.monotonic() + 10
        while len(children(server.pid)) < 2 and time.monotonic() < deadline:  # a busy machine forks slowly
            time.sleep(0.05)
        workers = children(server.pid)
        assert len(workers) == 2, server.log()
        for pid in workers:
            assert_nobody(pid)
    if model == "fork":  # a connection held open has its own child
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /who.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            checked = 0
            for pid in children(server.pid):
                try:
                    assert_nobody(pid)
                except FileNotFoundError:
                    continue  # the earlier request's child, ending while we look
                checked += 1
            assert checked  # at least this connection's child, which stays while the connection is open


def test_mail_folder_belongs_to_the_user_and_mail_is_delivered(sockhop_server, open_tmp):
    maildir = open_tmp / "mail"
    maildir.mkdir()  # made by root, as an administrator would
    server = serve_mail(sockhop_server, maildir, "prefork", "--catch-all", "--user", "nobody")
    host, port = server.address("mail")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail(f"a@{DOMAIN}", [f"b@{DOMAIN}"], b"Subject: dropped\r\n\r\nhello\r\n")
    (message,) = delivered(maildir)
    assert message["Subject"] == "dropped"
    for path in [maildir, *maildir.rglob("*")]:
        assert path.stat().st_uid == NOBODY.pw_uid, path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=30)


def test_root_on_a_privileged_port_without_user_is_refused(open_tmp):
    port = free_privileged_port()
    done = run("serve", "echo", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.startswith(f"sockhop: refusing to serve port {port} as root: add --user NAME")
    assert "Traceback" not in done.stderr


def test_allow_root_serves_as_root(sockhop_server):
    port = free_privileged_port()
    server = sockhop_server(["serve", "echo", "--listen", f"127.0.0.1:{port}", "--allow-root"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hi")
        assert sock.recv(10) == b"hi"
    assert ids(server.pid)[0] == [0, 0, 0, 0]


def test_unknown_user_is_one_line():
    done = run("serve", "echo", "--listen", "127.0.0.1:0", "--user", "no-such-user-here")
    assert done.returncode == 1
    assert done.stderr.strip() == "sockhop: --user no-such-user-here: no such user on this machine (see /etc/passwd)"
