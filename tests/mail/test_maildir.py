"""Durable delivery into Maildir, and reading it back."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest

from sockhop.mail.maildir import Maildir, list_messages, mailbox_name
from sockhop.mail.protocol import Envelope, Session
from tests.support import require_tool

SESSION = Session(peer=("127.0.0.1", 5000), local=("127.0.0.1", 25), helo="client.test", esmtp=True)


def envelope(*recipients: str, content: bytes = b"Subject: hi\nFrom: a@b.test\n\nhello\n") -> Envelope:
    return Envelope(sender="a@b.test", recipients=list(recipients), content=content)


def test_one_mailbox_per_local_part_created_on_first_use(tmp_path):
    store = Maildir(tmp_path, hostname="mx.test")
    store.deliver(SESSION, envelope("bob@example.test", "Carol@example.test", "bob@example.test"))
    for box in ("bob", "carol"):
        assert {p.name for p in (tmp_path / box).iterdir()} == {"tmp", "new", "cur"}
        [msg] = list((tmp_path / box / "new").iterdir())
        assert not list((tmp_path / box / "tmp").iterdir())
        text = msg.read_bytes()
        assert text.startswith(b"Return-Path: <a@b.test>\nReceived: from client.test ([127.0.0.1])\n\tby mx.test")
        assert text.endswith(b"\n\nhello\n")
        assert b"\r" not in text


def test_received_names_the_recipient_when_there_is_one(tmp_path):
    Maildir(tmp_path, hostname="mx.test").deliver(SESSION, envelope("bob@example.test"))
    [msg] = list((tmp_path / "bob" / "new").iterdir())
    assert b"with ESMTP id " in msg.read_bytes()
    assert b"\tfor <bob@example.test>; " in msg.read_bytes()


def test_catch_all_delivers_into_the_root(tmp_path):
    store = Maildir(tmp_path, catch_all=True)
    assert store.accepts("../../etc")
    store.deliver(SESSION, envelope("x@example.test", "y@example.test"))
    assert len(list((tmp_path / "new").iterdir())) == 1


@pytest.mark.parametrize(("local", "name"), [("Bob", "bob"), ("a.b+c", "a.b+c"), ("..", None), (".x", None),
                                             ('"a/b"', None), ("zoë", "zoë"), ("", None)])  # fmt: skip
def test_mailbox_names(local, name):
    assert mailbox_name(local) == name


def test_a_failed_delivery_leaves_nothing_in_new(tmp_path):
    (tmp_path / "carol").write_text("not a folder")
    store = Maildir(tmp_path)
    with pytest.raises(OSError):
        store.deliver(SESSION, envelope("bob@example.test", "carol@example.test"))
    assert not list((tmp_path / "bob" / "new").iterdir())
    assert not list((tmp_path / "bob" / "tmp").iterdir())


def test_list_messages(tmp_path):
    store = Maildir(tmp_path)
    store.deliver(SESSION, envelope("bob@example.test"))
    store.deliver(SESSION, envelope("carol@example.test", content=b"Subject: second\n\nx\n"))
    listed = list_messages(tmp_path)
    assert [(m.mailbox, m.subject, m.sender) for m in listed] == [("bob", "hi", "a@b.test"), ("carol", "second", "")]
    assert list_messages(tmp_path / "bob")[0].mailbox == "."


def test_concurrent_deliveries_share_one_commit(tmp_path, monkeypatch):
    import threading
    import time

    from sockhop.mail import maildir

    calls = []
    real = maildir.fsync_dir

    def slow_fsync_dir(path):
        calls.append(path)
        time.sleep(0.05)
        real(path)

    monkeypatch.setattr(maildir, "fsync_dir", slow_fsync_dir)
    store = Maildir(tmp_path)
    store.deliver(SESSION, envelope("bob@example.test"))  # creates the mailbox
    calls.clear()
    threads = [threading.Thread(target=store.deliver, args=(SESSION, envelope("bob@example.test"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(list((tmp_path / "bob" / "new").iterdir())) == 9
    assert 1 <= len(calls) < 8


def _jobs(folder, names, reported):
    """Jobs writing one small message each into ``folder``'s tmp/, reporting into ``reported``."""
    from sockhop.mail.maildir import _Job, write_file

    def job(name):
        tmp, new = f"{folder}/tmp/{name}", f"{folder}/new/{name}"
        return _Job(lambda: [(write_file(tmp, b"Subject: x\n\nbody\n"), tmp, new)],
                    lambda error: reported.append((name, error)))  # fmt: skip

    return [job(name) for name in names]


def test_a_failing_delivery_in_a_group_commit_costs_only_itself(tmp_path):
    from sockhop.mail.maildir import commit_jobs, ensure_maildir

    ensure_maildir(tmp_path)
    reported = []
    jobs = _jobs(tmp_path, ("good1", "lost", "good2", "unwritable"), reported)
    lost_write = jobs[1].write

    def write_then_lose():
        files = lost_write()
        os.unlink(files[0][1])  # its rename will fail
        return files

    jobs[1].write = write_then_lose
    jobs[3].write = lambda: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    commit_jobs(jobs)
    assert [(name, error is None) for name, error in reported] == [
        ("good1", True), ("lost", False), ("good2", True), ("unwritable", False)
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["good1", "good2"]
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("whole_filesystem", [True, False])
def test_a_batch_is_made_durable_by_one_syncfs_or_an_fsync_each(tmp_path, monkeypatch, whole_filesystem):
    from sockhop.mail import maildir

    assert maildir._syncfs is not None  # Linux 5.8 or later, as CI runs
    calls = []
    real = maildir._syncfs
    monkeypatch.setattr(maildir, "_syncfs", lambda fd: calls.append(fd) or real(fd))
    maildir.ensure_maildir(tmp_path)
    reported = []
    maildir.commit_jobs(_jobs(tmp_path, ("a", "b", "c"), reported), whole_filesystem)
    assert reported == [("a", None), ("b", None), ("c", None)]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a", "b", "c"]
    assert len(calls) == (1 if whole_filesystem else 0)


SYNC_CALL = re.compile(r"^\d+ +(?P<call>fsync|fdatasync|syncfs)\(\d+<(?P<path>[^>]*)>\) += 0$")


def read_reply(sock: socket.socket, code: bytes) -> bytes:
    """Read until a complete reply with ``code`` (its last line ``code SP ... CRLF``)."""
    buf = b""
    for _ in range(100):  # bounded: each recv waits at most the socket's timeout
        if re.search(rb"(^|\r\n)" + code + rb" [^\r\n]*\r\n$", buf):
            return buf
        chunk = sock.recv(4096)
        assert chunk, f"closed while waiting for {code!r}: {buf!r}"
        buf += chunk
    raise AssertionError(f"no {code!r} reply: {buf!r}")


def deliver_together(address: tuple[str, int], count: int) -> None:
    """``count`` SMTP sessions, each with one message to bob, whose ends of data go out together -- so that the
    server's group commit finds several of them waiting at once."""
    socks = [socket.create_connection(address, timeout=10) for _ in range(count)]
    try:
        for sock in socks:
            read_reply(sock, b"220")
            sock.sendall(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        for sock in socks:
            read_reply(sock, b"354")
        for sock in socks:
            sock.sendall(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        for sock in socks:
            read_reply(sock, b"250")
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("sync", ["each", "batch"])
def test_the_real_server_syncs_each_file_or_a_batch_by_syncfs(sockhop_server, tmp_path, sync):
    """``serve mail --sync each|batch`` watched by strace: each -- every message file gets its own fsync before
    its rename, never a syncfs, however many arrive together; batch -- messages committed together share one
    syncfs instead of their fsyncs. Both fsync ``new/`` after the renames."""
    from tests.mail.support import serve_mail

    strace = require_tool("strace")
    log = tmp_path / "strace.log"
    maildir = tmp_path / "mail"
    prefix = [strace, "-f", "-qq", "--seccomp-bpf", "-y", "-o", str(log),
              "-e", "trace=fsync,fdatasync,syncfs", "-e", "signal=none"]  # fmt: skip
    server = serve_mail(sockhop_server, maildir, "eventloop", "--sync", sync, prefix=prefix)
    tmp, new = f"{maildir}/bob/tmp/", f"{maildir}/bob/new"

    def calls() -> list[re.Match]:
        matches = [SYNC_CALL.match(line) for line in log.read_text().splitlines()]
        assert all(matches), log.read_text()
        return matches  # type: ignore[return-value]

    rounds = 0
    for rounds in range(1, 6):  # bounded: until a round's messages were committed together
        deliver_together(server.address("mail"), 4)
        dir_fsyncs = [c for c in calls() if c["call"] == "fsync" and c["path"] == new]
        if len(dir_fsyncs) < 4 * rounds:  # one fsync of new/ per commit: some commit took several messages
            break
    (served,) = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    os.kill(int(served), signal.SIGTERM)  # the server; strace ends with it
    assert server.stop() == 0
    messages = 4 * rounds
    assert len(list((maildir / "bob" / "new").iterdir())) == messages
    done = calls()
    dir_fsyncs = [c for c in done if c["call"] == "fsync" and c["path"] == new]
    assert 1 <= len(dir_fsyncs) < messages, f"no commit of several messages in {rounds} rounds"
    file_fsyncs = [c for c in done if c["call"] == "fsync" and c["path"].startswith(tmp)]
    syncfs = [c for c in done if c["call"] == "syncfs"]
    assert not [c for c in done if c["call"] == "fdatasync"]
    if sync == "each":
        assert syncfs == [] and len(file_fsyncs) == messages
        assert len({c["path"] for c in file_fsyncs}) == messages  # one per file, each file once
    else:
        assert syncfs, log.read_text()
        assert all(c["path"].startswith(tmp) for c in syncfs)  # called on a message file: its filesystem
        assert len(file_fsyncs) <= messages - 2 * len(syncfs)  # each syncfs stood for two or more fsyncs


def test_submit_returns_at_once_and_reports_from_the_commit_thread(tmp_path):
    import threading

    store = Maildir(tmp_path)
    reported = []
    finished = threading.Event()

    def done(result):
        reported.append((result, threading.current_thread().name))
        if len(reported) == 3:
            finished.set()

    for _ in range(3):
        store.submit(SESSION, envelope("bob@example.test"), done)
    assert finished.wait(20)
    assert {name for _, name in reported} == {"group-commit"}
    assert all(isinstance(queue_id, str) for queue_id, _ in reported)
    assert len(list((tmp_path / "bob" / "new").iterdir())) == 3


def test_a_forked_child_commits_with_a_thread_of_its_own(tmp_path):
    store = Maildir(tmp_path)
    store.deliver(SESSION, envelope("bob@example.test"))  # the parent's commit thread runs
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here; delivering must still work
        signal.alarm(20)  # a hang ends the child (and fails the test) instead of the suite
        try:
            store.deliver(SESSION, envelope("bob@example.test"))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(list((tmp_path / "bob" / "new").iterdir())) == 2


def test_a_mailbox_removed_while_serving_is_made_again(tmp_path):
    import shutil

    store = Maildir(tmp_path)
    store.deliver(SESSION, envelope("bob@example.test"))
    shutil.rmtree(tmp_path / "bob")  # someone cleans up while the server runs
    store.deliver(SESSION, envelope("bob@example.test"))
    assert len(list((tmp_path / "bob" / "new").iterdir())) == 1


# -- start-up: a Maildir that cannot be written is one line before the first client, not a 451 for every message --
def serve_mail(maildir, *extra: str):
    import subprocess
    import sys

    from tests.support import ROOT

    return subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "mail", str(maildir), "--domain", "example.test",
         "--listen", "127.0.0.1:0", *extra],
        capture_output=True, timeout=20, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def one_line(result) -> str:
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    [line] = err.strip().splitlines()
    return line


@pytest.fixture
def immutable(tmp_path):
    """A folder even root cannot write in (chattr +i), undone after the test; skipped where chattr is not."""
    import shutil
    import subprocess

    folder = tmp_path / "frozen"
    folder.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.parametrize("catch_all", [False, True], ids=["mailboxes", "catch-all"])
def test_an_unwritable_maildir_stops_start_up_in_one_line(immutable, catch_all):
    flags = ["--catch-all"] if catch_all else []
    where = f"create {immutable}/tmp" if catch_all else f"write to {immutable}"
    assert one_line(serve_mail(immutable, *flags)) == f"sockhop: cannot {where}: Operation not permitted"


@pytest.mark.parametrize("catch_all", [False, True], ids=["mailboxes", "catch-all"])
def test_a_maildir_the_kernel_refuses_stops_start_up_in_one_line(catch_all):
    # sysfs takes no new files, from root either
    flags = ["--catch-all"] if catch_all else []
    line = one_line(serve_mail("/sys/kernel", *flags))
    assert line.startswith("sockhop: cannot ") and "/sys/kernel" in line
    assert line.endswith(("Permission denied", "Operation not permitted"))


def test_a_maildir_under_a_regular_file_stops_start_up_in_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder\n")
    line = one_line(serve_mail(tmp_path / "file" / "mail"))
    assert line.startswith("sockhop: cannot create") and "Not a directory" in line


def test_the_constructor_checks_and_leaves_no_probe(tmp_path, immutable):
    from sockhop.mail.maildir import MaildirError

    with pytest.raises(MaildirError, match=f"cannot write to {immutable}: Operation not permitted"):
        Maildir(immutable)
    Maildir(tmp_path / "ok")
    Maildir(tmp_path / "one", catch_all=True)
    assert list((tmp_path / "ok").iterdir()) == []
    assert {p.name for p in (tmp_path / "one").iterdir()} == {"tmp", "new", "cur"}
    assert list((tmp_path / "one" / "tmp").iterdir()) == []
