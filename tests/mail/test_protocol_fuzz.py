"""Random and mutated command streams: the protocol never raises, always answers with well-formed replies, and
never delivers a message it did not end with CRLF.CRLF."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mail.helpers import Conversation

PIECES = [
    b"EHLO c.test\r\n", b"HELO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n",
    b"RCPT TO:<bob@example.test>\r\n", b"RCPT TO:<x@else.test>\r\n", b"DATA\r\n", b"hello\r\n", b".\r\n", b"..\r\n",
    b"\r\n.\n", b"\n", b"\r", b".", b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"HELP\r\n", b"QUIT\r\n", b"\xff",
    b"MAIL FROM:<a@b.test> SMTPUTF8\r\n", "RCPT TO:<ü@example.test>\r\n".encode(), b"x" * 1200,
]  # fmt: skip

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drive(stream: bytes, splits: list[int]) -> Conversation:
    conv = Conversation()
    start = 0
    for cut in sorted(splits) + [len(stream)]:
        if conv.closed:
            break
        if cut > start:
            conv.feed(stream[start:cut])
            start = cut
    conv.replies()  # every reply parses
    return conv


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_never_raise(stream, splits):
    conv = drive(stream, splits)
    assert not conv.store.delivered or b"\r\n.\r\n" in stream or b".\r\n" in stream


@SETTINGS
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(0, 3000), max_size=10))
def test_mutated_command_streams_never_raise(pieces, splits):
    stream = b"".join(pieces)
    conv = drive(stream, splits)
    for envelope in conv.store.delivered:
        assert envelope.recipients
        assert b"\r" not in envelope.content
