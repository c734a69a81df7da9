"""Replies on the wire: format and parse are inverses; a reply that is not SMTP is refused."""

from __future__ import annotations

import pytest

from sockhop.mail.codes import BadReply, Code, parse_reply, reply


@pytest.mark.parametrize(
    "answer",
    [
        reply(Code.OK, "2.1.0", "Ok"),
        reply(Code.OK, "", "mx.test Hello c", "PIPELINING", "SIZE 100"),
        reply(Code.HELP, "2.0.0", "one", "two"),
        reply(Code.SERVICE_UNAVAILABLE, "4.3.2", "mx.test shutting down, closing connection"),
    ],
)
def test_format_then_parse(answer):
    wire = answer.format()
    assert wire.endswith(b"\r\n")
    assert parse_reply(wire.split(b"\r\n")[:-1]) == answer


def test_format_multiline():
    assert reply(Code.OK, "", "a", "b").format() == b"250-a\r\n250 b\r\n"
    assert reply(Code.OK, "2.0.0", "a", "b").format() == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"


@pytest.mark.parametrize("lines", [[], [b"hello"], [b"250-a", b"251 b"], [b"250 a", b"250 b"], [b"25x ok"]])
def test_bad_replies(lines):
    with pytest.raises(BadReply):
        parse_reply(lines)
