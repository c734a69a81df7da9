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
    # the data begins after "DATA" CRLF, so even an empty message's end, "." CRLF, completes a CRLF.CRLF
    assert not conv.store.delivered or b"\r\n.\r\n" in stream


@SETTINGS
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(0, 3000), max_size=10))
def test_mutated_command_streams_never_raise(pieces, splits):
    stream = b"".join(pieces)
    conv = drive(stream, splits)
    for envelope in conv.store.delivered:
        assert envelope.recipients
        assert b"\r" not in envelope.content


HEAD = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
BODY_PIECES = [
    b"a", b"b c", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n",
    b"\r\n.\n", b"\r\n..\r\n", b"\r\r\n", b"\n\r",
]  # fmt: skip


def expected_message(data: bytes) -> tuple[bytes, bytes | None]:
    """What the server promises for the bytes after DATA's CRLF: the message ends at the first CRLF "." CRLF (or
    "." CRLF at once) and nowhere else; its text is refused whole if it holds a bare CR or LF, else delivered
    with lines ending in LF and leading dots unstuffed. Returns (the data up to and including the end, the content
    delivered or None)."""
    wire = b"\r\n" + data  # DATA's CRLF: the data starts at the start of a line
    end = wire.find(b"\r\n.\r\n")
    assert end >= 0
    text = wire[2 : end + 2]  # every line with its CRLF, without the "." line
    consumed = wire[2 : end + 5]
    if not text.count(b"\r\n") == text.count(b"\r") == text.count(b"\n"):
        return consumed, None
    lines = [line[1:] if line.startswith(b".") else line for line in text.split(b"\r\n")[:-1]]
    return consumed, b"".join(line + b"\n" for line in lines)


@SETTINGS
@given(st.lists(st.sampled_from(BODY_PIECES), max_size=30), st.lists(st.integers(0, 400), max_size=10))
def test_the_end_of_data_is_exactly_crlf_dot_crlf(pieces, splits):
    """A message ends at CRLF.CRLF and at nothing else (LF.LF, CR.CR, LF.CRLF, CRLF.LF ... are text), and a message
    with a bare CR or LF anywhere is refused whole (554 5.6.0, nothing delivered). The stream stops right after the
    first CRLF.CRLF, so a server that ended the data anywhere else would answer a different number of replies."""
    data, content = expected_message(b"".join(pieces) + b"\r\n.\r\n")
    conv = drive(HEAD + data, splits)
    replies = conv.replies()
    assert [r.code for r in replies[:5]] == [220, 250, 250, 250, 354]
    assert len(replies) == 6, replies[5:]  # exactly one answer to the end of data, and nothing after it
    if content is None:
        assert (replies[5].code, replies[5].status) == (554, "5.6.0") and "bare CR or LF" in replies[5].text
        assert conv.store.delivered == []
    else:
        assert replies[5].code == 250, replies[5]
        assert [e.content for e in conv.store.delivered] == [content]
    assert not conv.closed
