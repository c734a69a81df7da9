"""The SMTP state machine fed bytes directly: every sample whole, byte by byte, and in odd chunks (h11's style)."""

from __future__ import annotations

import errno

import pytest

from sockhop.engine.protocol import Close
from sockhop.mail.codes import Code
from sockhop.mail.protocol import MAX_TEXT_LINE, SMTPServer, State
from tests.mail.helpers import POLICY, Conversation, MemoryStore

CHUNKS = [0, 1, 7]

EHLO = b"EHLO client.test\r\n"
TRANSACTION = b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"


def run(data: bytes, chunk: int = 0, **kwargs) -> Conversation:
    conv = Conversation(**kwargs)
    conv.feed(data, chunk=chunk)
    return conv


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_whole_transaction_is_delivered(chunk):
    body = b"Subject: hi\r\n\r\nline one\r\n..dot stuffed\r\n.\r\n"
    conv = run(EHLO + TRANSACTION + body + b"QUIT\r\n", chunk)
    assert conv.codes() == [Code.SERVICE_READY, Code.OK, Code.OK, Code.OK, Code.START_MAIL_INPUT, Code.OK, Code.CLOSING]
    assert conv.closed
    [env] = conv.store.delivered
    assert env.sender == "alice@sender.test"
    assert env.recipients == ["bob@example.test"]
    assert env.content == b"Subject: hi\n\nline one\n.dot stuffed\n"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_trailing_data_after_a_message_is_the_next_transaction(chunk):
    one = TRANSACTION + b"first\r\n.\r\n"
    two = TRANSACTION + b"second\r\n.\r\n"
    conv = run(EHLO + one + two, chunk)
    assert [e.content for e in conv.store.delivered] == [b"first\n", b"second\n"]
    assert conv.server.state is State.READY


def test_pipelined_batch_gets_its_replies_in_one_reply():
    conv = Conversation()
    conv.feed(EHLO)
    reply = conv.server.data_received(TRANSACTION)
    assert len(reply.send) == 3
    assert [r[:3] for r in reply.send] == [b"250", b"250", b"354"]


def test_ehlo_advertises_the_extensions():
    conv = run(EHLO)
    ehlo = conv.replies()[1]
    assert ehlo.code == Code.OK
    assert {"PIPELINING", "SIZE 4096", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"} <= set(ehlo.lines)


def test_empty_message():
    conv = run(EHLO + TRANSACTION + b".\r\n")
    assert conv.codes()[-1] == Code.OK
    assert conv.store.delivered[0].content == b""


@pytest.mark.parametrize(
    "sample",
    [
        b"a\n.\nMAIL FROM:<evil@x>\r\n",
        b"a\r\n.\nRCPT TO:<x@y>\r\n",
        b"a\n.\r\nb\r\n",
        b"a\r.\r\nb\r\n",
        b"a\r\n.\rb\r\n",
        b"a\r\n. \r\nb\r\n",
    ],
)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_no_other_line_ending_around_a_dot_ends_the_message(sample, chunk):
    conv = run(EHLO + TRANSACTION + sample, chunk)
    assert conv.server.state is State.DATA
    assert conv.codes()[-1] == Code.START_MAIL_INPUT
    conv.feed(b".\r\n")
    assert conv.server.state is State.READY
    if b"\r\n. \r\n" in sample:  # a well-formed line ". " is just text, unstuffed ...
        assert conv.store.delivered[0].content == b"a\n \nb\n"
        return
    assert not conv.store.delivered
    assert conv.replies()[-1].code == Code.TRANSACTION_FAILED  # ... a bare CR or LF gets the whole message refused


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_smuggled_message_is_not_delivered(chunk):
    smuggled = b"hi\r\n\n.\nMAIL FROM:<a@b.test>\nRCPT TO:<bob@example.test>\nDATA\nsmuggled\r\n.\r\n"
    conv = run(EHLO + TRANSACTION + smuggled + b"QUIT\r\n", chunk)
    assert conv.codes()[-2:] == [Code.TRANSACTION_FAILED, Code.CLOSING]
    assert not conv.store.delivered


def test_line_too_long_in_data_is_refused_and_the_session_goes_on():
    long_line = b"x" * MAX_TEXT_LINE + b"\r\n"
    for chunk in (0, 100):
        conv = run(EHLO + TRANSACTION + long_line + b".\r\nNOOP\r\n", chunk)
        assert conv.codes()[-2:] == [Code.TRANSACTION_FAILED, Code.OK]
        assert not conv.store.delivered
    ok = run(EHLO + TRANSACTION + b"x" * (MAX_TEXT_LINE - 2) + b"\r\n.\r\n")
    assert ok.codes()[-1] == Code.OK


def test_command_line_too_long():
    conv = run(EHLO + b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n", 0)
    assert conv.codes()[-2:] == [Code.SYNTAX_ERROR, Code.OK]
    conv = run(EHLO + b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n", 512)
    assert conv.codes()[-2:] == [Code.SYNTAX_ERROR, Code.OK]


def test_size_refused_early_and_after_data():
    conv = run(EHLO + b"MAIL FROM:<a@b.test> SIZE=5000\r\n")
    assert conv.replies()[-1].code == Code.EXCEEDED_STORAGE
    assert conv.replies()[-1].status == "5.3.4"
    big = b"x" * 900 + b"\r\n"
    conv = run(EHLO + TRANSACTION + big * 6 + b".\r\nNOOP\r\n", 0)
    assert conv.codes()[-2:] == [Code.EXCEEDED_STORAGE, Code.OK]
    assert not conv.store.delivered


@pytest.mark.parametrize(
    ("commands", "code"),
    [
        (b"MAIL FROM:<a@b.test>\r\n", Code.BAD_SEQUENCE),  # before EHLO
        (EHLO + b"RCPT TO:<bob@example.test>\r\n", Code.BAD_SEQUENCE),
        (EHLO + b"DATA\r\n", Code.BAD_SEQUENCE),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nDATA\r\n", Code.BAD_SEQUENCE),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n", Code.BAD_SEQUENCE),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n", Code.TRANSACTION_FAILED),
        (b"FROB\r\n", Code.SYNTAX_ERROR),
        (b"EXPN staff\r\n", Code.NOT_IMPLEMENTED),
        (b"\xff\xfe\r\n", Code.SYNTAX_ERROR),
        (b"EHLO\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"MAIL FROM:alice@b.test\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"MAIL FROM:<alice@@b.test>\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@b.test> SIZE=x\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@b.test> FROB=1\r\n", Code.PARAMETERS_NOT_RECOGNIZED),
        (b"HELO c.test\r\nMAIL FROM:<a@b.test> BODY=8BITMIME\r\n", Code.PARAMETERS_NOT_RECOGNIZED),
        (EHLO + "MAIL FROM:<jörg@b.test>\r\n".encode(), Code.MAILBOX_NAME_NOT_ALLOWED),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@elsewhere.test>\r\n", Code.MAILBOX_UNAVAILABLE),
        (EHLO + b'MAIL FROM:<a@b.test>\r\nRCPT TO:<"../etc"@example.test>\r\n', Code.MAILBOX_NAME_NOT_ALLOWED),
        (EHLO + b"RSET now\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"VRFY bob\r\n", Code.CANNOT_VRFY),
        (EHLO + b"VRFY\r\n", Code.PARAMETER_SYNTAX),
        (EHLO + b"HELP\r\n", Code.HELP),
        (EHLO + b"HELP mail\r\n", Code.HELP),
        (EHLO + b"NOOP anything\r\n", Code.OK),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nRSET\r\n", Code.OK),
        (EHLO + b"MAIL FROM:<>\r\n", Code.OK),
        (EHLO + b"MAIL FROM: <a@b.test> BODY=8BITMIME SIZE=100\r\n", Code.OK),
        (EHLO + b"MAIL FROM:<@relay.test:a@b.test>\r\n", Code.OK),
        (EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<Postmaster>\r\n", Code.OK),
    ],
)
def test_replies(commands, code):
    for chunk in CHUNKS:
        assert run(commands, chunk).codes()[-1] == code


def test_bad_sequence_names_the_state():
    conv = run(EHLO + b"DATA\r\n")
    assert "DATA in state READY" in conv.replies()[-1].text
    assert conv.replies()[-1].status == "5.5.1"


def test_smtputf8():
    conv = run(EHLO + "MAIL FROM:<jörg@b.test> SMTPUTF8\r\nRCPT TO:<zoë@example.test>\r\nDATA\r\n".encode()
               + "Subject: ü\r\n\r\nü\r\n.\r\n".encode())  # fmt: skip
    assert conv.codes()[-1] == Code.OK
    [env] = conv.store.delivered
    assert env.smtputf8 and env.recipients == ["zoë@example.test"]


def test_recipient_restriction_and_postmaster():
    policy = POLICY.__class__(**{**POLICY.__dict__, "recipients": frozenset({"bob"})})
    conv = run(EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<eve@example.test>\r\nRCPT TO:<BOB@example.test>\r\n"
               b"RCPT TO:<postmaster@example.test>\r\n", policy=policy)  # fmt: skip
    assert conv.codes()[-3:] == [Code.MAILBOX_UNAVAILABLE, Code.OK, Code.OK]
    assert conv.replies()[-3].status == "5.1.1"


def test_too_many_recipients():
    rcpts = b"".join(b"RCPT TO:<u%d@example.test>\r\n" % i for i in range(7))
    conv = run(EHLO + b"MAIL FROM:<a@b.test>\r\n" + rcpts + b"DATA\r\nhi\r\n.\r\n")
    assert conv.codes()[2:] == [Code.OK] * 6 + [Code.INSUFFICIENT_STORAGE] * 2 + [Code.START_MAIL_INPUT, Code.OK]
    assert len(conv.store.delivered[0].recipients) == 5


def test_delivery_failure_is_451_and_the_session_goes_on():
    conv = run(EHLO + TRANSACTION + b"hi\r\n.\r\nNOOP\r\n", store=MemoryStore(fail=True))
    assert conv.codes()[-2:] == [Code.LOCAL_ERROR, Code.OK]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_452_4_3_1(error):
    conv = run(EHLO + TRANSACTION + b"hi\r\n.\r\nNOOP\r\n", store=MemoryStore(fail=True, errno=error))
    assert [(r.code, r.status) for r in conv.replies()[-2:]] == [(452, "4.3.1"), (250, "2.0.0")]


def test_stop_between_commands_is_421():
    conv = run(EHLO)
    conv.event("stop_requested")
    assert conv.codes()[-1] == Code.SERVICE_UNAVAILABLE and conv.closed


def test_stop_during_data_lets_the_message_finish():
    conv = run(EHLO + TRANSACTION + b"hi\r\n")
    conv.event("stop_requested")
    assert not conv.closed
    conv.feed(b".\r\n")
    assert conv.codes()[-2:] == [Code.OK, Code.SERVICE_UNAVAILABLE] and conv.closed
    assert len(conv.store.delivered) == 1


def test_timeout_is_421():
    conv = run(EHLO)
    conv.event("timed_out")
    assert conv.replies()[-1].code == Code.SERVICE_UNAVAILABLE
    assert conv.replies()[-1].status == "4.4.2" and conv.closed


def test_too_many_errors_closes():
    conv = run(b"FROB\r\n" * 30)
    assert conv.codes()[-1] == Code.SERVICE_UNAVAILABLE and conv.closed
    assert len(conv.codes()) == 1 + POLICY.max_errors + 1


def test_eof_mid_message_delivers_nothing():
    conv = run(EHLO + TRANSACTION + b"half a message\r\n")
    conv.event("eof_received")
    assert conv.closed and not conv.store.delivered


def test_quit_closes():
    conv = run(b"QUIT\r\nNOOP\r\n")
    assert conv.codes() == [Code.SERVICE_READY, Code.CLOSING] and conv.closed


def test_quit_with_nothing_behind_it_closes_at_once_else_lingers():
    server = SMTPServer(POLICY, MemoryStore())
    server.connection_made(("127.0.0.1", 40000), ("127.0.0.1", 25))
    assert server.data_received(b"QUIT\r\n").close == Close.AT_ONCE  # the client sends no more: no half-close
    server = SMTPServer(POLICY, MemoryStore())
    server.connection_made(("127.0.0.1", 40000), ("127.0.0.1", 25))
    assert server.data_received(b"QUIT\r\nNOOP\r\n").close == Close.LINGER  # input behind it: drain, no reset


def test_guessing_recipients_counts_as_errors():
    guesses = b"".join(b"RCPT TO:<u%d@elsewhere.test>\r\n" % i for i in range(30))
    conv = run(EHLO + b"MAIL FROM:<a@b.test>\r\n" + guesses)
    assert conv.codes()[-1] == Code.SERVICE_UNAVAILABLE and conv.closed
    assert conv.codes().count(Code.MAILBOX_UNAVAILABLE) == POLICY.max_errors
