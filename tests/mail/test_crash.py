"""Deliver in a loop from several clients, SIGKILL the server at a random moment, and check the promise: every
message that got 250 is in new/, whole, and nothing half-written is in new/."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import threading
import time

import pytest

from tests.mail.support import serve_mail

CLIENTS = 3
LINES = 200  # ~ 14 KiB a message: big enough to be caught mid-write


def message(tag: str) -> bytes:
    body = b"".join(b"%s line %04d of a message that must arrive whole\r\n" % (tag.encode(), i) for i in range(LINES))
    return b"Subject: %s\r\nMessage-ID: <%s@crash.test>\r\n\r\n%sEND %s\r\n" % (
        tag.encode(), tag.encode(), body, tag.encode()
    )  # fmt: skip


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_sigkill_loses_no_acknowledged_message(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model, start_new_session=True)
    host, port = server.address("mail")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            tag = f"c{n}m{i}"
            try:
                with smtplib.SMTP(host, port, timeout=10) as smtp:
                    smtp.sendmail("a@b.test", [f"box{n}@example.test"], message(tag))
            except (OSError, smtplib.SMTPException):
                return  # the server is gone
            with lock:
                acknowledged.append(tag)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.05, 0.5))
    os.killpg(server.pid, signal.SIGKILL)
    server.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert acknowledged, server.log()

    found: dict[str, bytes] = {}
    for n in range(CLIENTS):
        new = tmp_path / f"box{n}" / "new"
        for path in new.iterdir() if new.is_dir() else []:
            data = path.read_bytes()
            head, _, body = data.partition(b"\n\n")
            tag = body.rsplit(b"END ", 1)[-1].strip().decode()
            expected = message(tag).replace(b"\r\n", b"\n")
            assert data.endswith(expected.partition(b"\n\n")[2]), f"half-written message in new/: {path}"
            found[tag] = data
    missing = [tag for tag in acknowledged if tag not in found]
    assert not missing, f"acknowledged but not in new/: {missing}"
