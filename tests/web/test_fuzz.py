"""Random bytes at the protocol (hypothesis): it never raises; it answers only with an error status, or waits."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockhop.engine.protocol import as_reply

from .helpers import materialise, server

ROOT = Path(__file__).resolve().parent  # any directory will do: the answers are errors, or files from here

REQUEST_ISH = st.lists(
    st.sampled_from(
        [
            b"GET ",
            b"HEAD ",
            b"FOO ",
            b"/",
            b"..",
            b"%2e",
            b"%00",
            b"\\",
            b"?",
            b" HTTP/1.1",
            b" HTTP/1.0",
            b" HTTP/2.0",
            b"\r\n",
            b"\n",
            b"Host: x",
            b"Content-Length: 3",
            b"Transfer-Encoding: chunked",
            b": ",
            b" ",
            b"\t",
            b"abc",
            b"0\r\n\r\n",
            b"\x00",
            b"\xff",
            b"Range: bytes=0-1",
            b"Connection: close",
        ]
    ),
    max_size=40,
).map(b"".join)


def check(chunks: list[bytes]) -> None:
    proto = server(ROOT)
    replies = []
    for chunk in chunks:
        if not chunk:
            continue
        reply = as_reply(proto.data_received(chunk))
        replies.append(reply)
        if reply.close:
            break
    replies.append(proto.timed_out())
    raw, _ = materialise(replies)
    for line in raw.split(b"\r\n"):
        if line.startswith(b"HTTP/1."):
            status = int(line.split()[1])
            assert status in (200, 206, 301, 304, 400, 403, 404, 405, 408, 413, 414, 416, 431, 501, 505), line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes(chunks):
    check(chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(REQUEST_ISH, max_size=6))
def test_request_shaped_noise(chunks):
    check(chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_client_reader_on_random_bytes(chunks, head):
    """The client's reader either completes, waits, or raises MalformedResponse -- nothing else."""
    from sockhop.web.client import MalformedResponse, ResponseReader

    reader = ResponseReader(lambda data: None, head=head)
    try:
        for chunk in [b"HTTP/1.1 200 OK\r\n", *chunks]:
            if chunk and reader.feed(chunk):
                break
        else:
            reader.eof()
    except MalformedResponse:
        pass


def answers(proto, data: bytes) -> tuple[bytes, bool]:
    raw, close = materialise([proto.data_received(data)])
    return raw, close


WELL_FORMED = st.builds(
    lambda method, path, version, fields, tail: (
        (f"{method} {path} HTTP/{version}\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode() + tail
    ),
    st.sampled_from(["GET", "HEAD", "DELETE", "BREW"]),
    st.sampled_from(["/", "/test_fuzz.py", "/nope", "/.x", "/a/../test_fuzz.py", "/%2e%2e/x", "/helpers.py?q=1"]),
    st.sampled_from(["1.1", "1.0"]),
    st.lists(
        st.sampled_from(
            [
                "Host: x",
                "Connection: close",
                "Connection: keep-alive",
                "Range: bytes=0-3",
                "Range: bytes=0-1,5-6",
                "If-None-Match: *",
                "Accept-Encoding: gzip",
                "Content-Length: 0",
                "Content-Length: 2",
                "User-Agent: u",
                "Referer: http://r/",
            ]
        ),
        max_size=5,
    ),
    st.sampled_from([b"", b"\r\n", b"ab", b"GET / HTTP/1.1\r\n", b"\x00"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(WELL_FORMED, REQUEST_ISH))
def test_a_repeat_is_answered_exactly_as_the_parser_answers_it(data):
    """Whatever the bytes, answering them from the memo (the second time) says exactly what the parser said the first
    time, on a fresh connection -- and on the first connection too, if it is still open."""
    if not data:
        return
    first = server(ROOT)
    once = answers(first, data)
    fresh = type(first)(first.options)
    fresh.connection_made(("127.0.0.1", 40000), ("127.0.0.1", 8080))
    assert answers(fresh, data) == once
    if not once[1] and first.state.name == "IDLE":  # still open, between requests: the same bytes, the same answer
        assert answers(first, data) == once
