"""RFC 5321 4.5.3.2 timeouts as deadlines (Reply.alarm): a client that trickles bytes cannot stretch them."""

from __future__ import annotations

import select
import socket
import time

import pytest

from sockhop.mail.codes import Code
from sockhop.mail.protocol import MailPolicy
from tests.mail.helpers import Conversation
from tests.mail.support import DOMAIN, delivered, serve_mail

POLICY = MailPolicy(hostname="mx.example.test", domains=frozenset({DOMAIN}), command_timeout=30, data_timeout=90)
TRANSACTION = f"MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\nDATA\r\n".encode()


# -- the protocol: which deadline holds when ---------------------------------------------------------------------
def test_greeting_starts_the_command_deadline():
    assert Conversation(POLICY).alarm == 30


def test_a_partial_command_leaves_the_deadline_alone():
    conv = Conversation(POLICY)
    conv.alarm = None  # forget what the greeting set: only replies that set it again count
    conv.feed(b"EHLO cli", chunk=1)
    assert conv.alarm is None
    conv.feed(b"ent.test\r\n")
    assert conv.alarm == 30


def test_354_starts_the_data_deadline_and_message_lines_do_not_renew_it():
    conv = Conversation(POLICY)
    conv.feed(b"EHLO client.test\r\n" + TRANSACTION)
    assert conv.codes()[-1] == Code.START_MAIL_INPUT and conv.alarm == 90
    conv.alarm = None
    conv.feed(b"Subject: slow\r\n\r\n" + b"line\r\n" * 50, chunk=3)
    assert conv.alarm is None  # whole lines of the message do not buy time
    conv.feed(b".\r\n")
    assert conv.codes()[-1] == Code.OK and conv.alarm == 30  # delivered: back to the command deadline


def test_refused_message_goes_back_to_the_command_deadline():
    conv = Conversation(MailPolicy(hostname="mx", domains=frozenset({DOMAIN}), max_size=10, data_timeout=90))
    conv.feed(b"EHLO client.test\r\n" + TRANSACTION + b"x" * 50 + b"\r\n.\r\n")
    assert conv.codes()[-1] == Code.EXCEEDED_STORAGE and conv.alarm == conv.server.policy.command_timeout


def test_data_timeout_drops_the_message_with_421():
    conv = Conversation(POLICY)
    conv.feed(b"EHLO client.test\r\n" + TRANSACTION + b"Subject: never finished\r\n")
    conv.event("timed_out")
    last = conv.replies()[-1]
    assert (last.code, last.status) == (Code.SERVICE_UNAVAILABLE, "4.4.2") and conv.closed
    assert not conv.store.delivered


# -- the real server, a client trickling a byte at a time ------------------------------------------------------
def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def trickle(sock: socket.socket, data: bytes, limit: float) -> float:
    """Send ``data`` a byte every 0.1 s (each well inside the idle timeout) until the server says something; the
    seconds that took. Stops after ``limit`` seconds whatever happens."""
    start = time.monotonic()
    for byte in data:
        if time.monotonic() - start > limit or select.select([sock], [], [], 0.1)[0]:
            break  # the server spoke (its 421): stop before writing into a closed connection
        sock.sendall(bytes([byte]))
    return time.monotonic() - start


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork", "fork"])
def test_trickled_command_hits_the_command_deadline(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model, "--command-timeout", "1.5", "--idle-timeout", "60")
    with socket.create_connection(server.address("mail"), timeout=30) as sock:
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO client.test\r\n")
        assert b"250 " in read_reply(sock)
        elapsed = trickle(sock, b"MAIL FROM:<" + b"a" * 300, limit=20)
        rest = b""
        while chunk := sock.recv(4096):  # the 421, then the server's close
            rest += chunk
    assert b"421 4.4.2 " in rest, rest
    assert elapsed < 15


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_trickled_message_hits_the_data_deadline_and_is_not_delivered(sockhop_server, tmp_path, model):
    server = serve_mail(sockhop_server, tmp_path, model, "--data-timeout", "2", "--idle-timeout", "60")
    with socket.create_connection(server.address("mail"), timeout=30) as sock:
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO client.test\r\n" + TRANSACTION)
        replies = b""
        while b"354 " not in replies:
            replies += read_reply(sock)
        # whole short lines, each completing something: still the one deadline for the whole message
        elapsed = trickle(sock, b"Subject: slow\r\n\r\n" + b"a\r\n" * 300, limit=20)
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
    assert b"421 4.4.2 " in rest, rest
    assert elapsed < 15
    assert delivered(tmp_path, "bob") == []
