"""The server protocol in memory: every request fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sockhop.engine.protocol import Close, FileRegion, Reply, as_reply
from sockhop.web.files import SMALL_FILE
from sockhop.web.protocol import HttpLimits, HttpServer, State

from .helpers import feed, materialise, parse_responses, server

MODES = ["whole", "bytewise", "trailing"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello, world\n")
    (tmp_path / "page.html").write_text("<h1>page</h1>\n")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 400)  # 100 KiB: sent with sendfile
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".secret").write_text("hidden\n")
    return tmp_path


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: example.test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def one(root: Path, request: bytes, mode: str = "whole", **site):
    proto = server(root, **site)
    raw, close = feed(proto, request, mode)
    responses = parse_responses(raw, heads=(request.startswith(b"HEAD"),))
    assert len(responses) == 1, raw
    return responses[0], close, proto


@pytest.mark.parametrize("mode", MODES)
def test_get_a_file(root, mode):
    response, close, proto = one(root, get("/hello.txt"), mode)
    assert response.status == 200
    assert response.body == b"hello, world\n"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == "13"
    assert response.header("date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert response.header("server").startswith("sockhop/")
    assert response.header("etag").startswith('"')
    assert response.header("last-modified").endswith("GMT")
    assert response.header("accept-ranges") == "bytes"
    assert not close and proto.state is (State.HEAD if mode == "trailing" else State.IDLE)


def test_head_has_headers_and_no_body(root):
    response, close, _ = one(root, get("/hello.txt", method="HEAD"))
    assert response.status == 200
    assert response.header("content-length") == "13"
    assert response.body == b""
    assert not close


def test_trailing_data_waits_for_the_rest(root):
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt") + b"GET /page.ht")
    assert [r.status for r in parse_responses(raw)] == [200]
    assert not close and proto.state is State.HEAD
    raw, close = feed(proto, b"ml HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_responses(raw)[0].body == b"<h1>page</h1>\n"


@pytest.mark.parametrize("mode", MODES)
def test_pipelined_requests_are_answered_in_order(root, mode):
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt") + get("/missing") + get("/page.html", method="HEAD") + get("/"), mode)
    responses = parse_responses(raw, heads=(False, False, True, False))
    assert [r.status for r in responses] == [200, 404, 200, 200]
    assert responses[0].body == b"hello, world\n"
    assert responses[2].body == b""
    assert b"Index of /" in responses[3].body
    assert not close


def test_http10_closes_unless_asked_to_keep_alive(root):
    response, close, _ = one(root, get("/hello.txt", version="1.0"))
    assert close and response.header("connection") == "close"
    response, close, _ = one(root, get("/hello.txt", "Connection: keep-alive", version="1.0"))
    assert not close and response.header("connection") == "keep-alive"


def test_http10_needs_no_host(root):
    response, _, _ = one(root, b"GET /hello.txt HTTP/1.0\r\n\r\n")
    assert response.status == 200


def test_connection_close_is_honoured_and_later_requests_ignored(root):
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt", "Connection: close") + get("/page.html"))
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200]
    assert close and responses[0].header("connection") == "close"
    assert proto.data_received(get("/page.html")).send == ()


@pytest.mark.parametrize(
    "request_, how",
    [
        (get("/hello.txt", "Connection: close"), Close.AT_ONCE),
        (get("/hello.txt", version="1.0"), Close.AT_ONCE),
        (get("/nowhere", "Connection: close"), Close.AT_ONCE),
        (get("/hello.txt", "Connection: close") + b"junk", Close.AT_ONCE),  # read already: no reset to fear
        (get("/hello.txt", "Content-Length: 5", "Expect: 100-continue", method="POST") + b"ab", Close.LINGER),
        (get("/hello.txt", "Content-Length: 2000000", "Connection: close", method="POST") + b"ab", Close.LINGER),
        (get("/hello.txt", "Connection: Upgrade", "Upgrade: websocket"), Close.LINGER),
        (b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", Close.LINGER),
    ],
)
def test_only_a_client_that_asked_to_close_is_closed_without_lingering(root, request_, how):
    first = server(root)
    again = HttpServer(first.options)  # a second connection sending the same bytes: answered from the memo
    for proto in (first, again):
        assert proto.data_received(request_).close == how


def test_a_connection_the_server_ends_lingers(root):
    proto = server(root, limits=HttpLimits(max_requests=1))
    assert proto.data_received(get("/hello.txt")).close == Close.LINGER


def test_requests_per_connection_are_capped(root):
    proto = server(root, limits=HttpLimits(max_requests=2))
    raw, close = feed(proto, get("/hello.txt") * 3)
    responses = parse_responses(raw)
    assert len(responses) == 2 and close
    assert responses[1].header("connection") == "close"


def test_big_files_go_out_with_sendfile(root):
    proto = server(root)
    reply = proto.data_received(get("/big.bin"))
    regions = [p for p in reply.send if isinstance(p, FileRegion)]
    assert len(regions) == 1 and regions[0].count == 256 * 400 > SMALL_FILE
    raw, _ = materialise([reply])
    assert parse_responses(raw)[0].body == bytes(range(256)) * 400


# -- methods ------------------------------------------------------------------------------------------------------
def test_known_methods_get_405_with_allow(root):
    response, close, _ = one(root, get("/hello.txt", method="DELETE"))
    assert response.status == 405 and response.header("allow") == "GET, HEAD"
    assert not close


@pytest.mark.parametrize("mode", MODES)
def test_post_with_a_body_is_read_and_dropped_then_405(root, mode):
    proto = server(root)
    chunked = get("/hello.txt", "Transfer-Encoding: chunked", method="POST") + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    request = get("/hello.txt", "Content-Length: 5", method="POST") + b"abcde" + chunked + get("/page.html")
    raw, close = feed(proto, request, mode)
    assert [r.status for r in parse_responses(raw)] == [405, 405, 200] and not close


@pytest.mark.parametrize("mode", MODES)
def test_post_expecting_100_continue_gets_405_at_once_and_close(root, mode):
    request = get("/hello.txt", "Content-Length: 5", "Expect: 100-continue", method="POST")
    response, close, proto = one(root, request, mode)
    assert response.status == 405 and close and proto.state is State.CLOSING


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_a_body_that_will_be_read_gets_100_continue(root, mode):
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt", "Content-Length: 3", "Expect: 100-continue"), mode)
    assert raw == b"HTTP/1.1 100 Continue\r\n\r\n" and not close
    raw, close = feed(proto, b"abc")
    assert parse_responses(raw)[0].body == b"hello, world\n" and not close


@pytest.mark.parametrize("mode", MODES)
def test_a_body_declared_over_max_body_is_413_at_once(root, mode):
    request = get("/hello.txt", "Content-Length: 11", "Expect: 100-continue", method="PUT")
    response, close, _ = one(root, request, mode, limits=HttpLimits(max_body=10))
    assert response.status == 413 and close


def test_a_chunked_body_over_max_body_is_413(root):
    proto = server(root, limits=HttpLimits(max_body=10))
    raw, close = feed(proto, get("/hello.txt", "Transfer-Encoding: chunked", method="POST") + b"6\r\nabcdef\r\n" * 2)
    assert parse_responses(raw)[0].status == 413 and close


def test_an_unknown_expectation_is_417(root):
    response, close, _ = one(root, get("/hello.txt", "Content-Length: 1", "Expect: teapot") + b"x")
    assert response.status == 417 and close


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "body, status",
    [
        (b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 400),  # chunk-size overflow
        (b"Content-Length: 99999999999999999999999\r\n\r\n", 400),  # length overflow
        (b"Content-Length: 2\r\n\r\nabcdef", 400),  # a length that lies short: the rest is no request
        (b"\r\nhello=world", 400),  # a body after a GET without a length: no request either
        (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n", 400),  # a chunk longer than its size
    ],
)
def test_hostile_bodies_are_refused(root, mode, body, status):
    request = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n" + body
    raw, close = feed(server(root), request, mode)
    responses = parse_responses(raw)
    assert responses[-1].status == status and close


@pytest.mark.parametrize("mode", MODES)
def test_unknown_method_is_501(root, mode):
    response, close, _ = one(root, get("/hello.txt", method="FROB"), mode)
    assert response.status == 501 and close


@pytest.mark.parametrize("mode", MODES)
def test_webdav_method_is_501(root, mode):
    response, close, _ = one(root, get("/hello.txt", method="PROPFIND"), mode)
    assert response.status == 501


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b"hello there\r\n\r\n"])
def test_garbage_is_400(root, mode, garbage):
    response, close, _ = one(root, garbage, mode)
    assert response.status == 400 and close


# -- paths --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/../hello.txt",
        "/%2e%2e/hello.txt",
        "/docs/../../etc/passwd",
        "/docs/..%2f..%2fetc%2fpasswd",
        "/%2E%2E%2Fetc%2Fpasswd",
        "/hello.txt%00.html",
        "/docs%5c..%5chello.txt",
        "/%c0%ae%c0%ae/etc/passwd",  # overlong UTF-8 for "."
        "/%ff",
        "*",
        "example.test:443",
    ],
)
def test_paths_that_would_leave_the_root_are_400(root, path):
    response, close, _ = one(root, get(path))
    assert response.status == 400, path


def test_dot_segments_inside_the_root_resolve(root):
    response, _, _ = one(root, get("/docs/../hello.txt"))
    assert response.status == 200 and response.body == b"hello, world\n"


def test_absolute_form_target(root):
    response, _, _ = one(root, get("http://example.test/hello.txt?x=1"))
    assert response.status == 200


def test_dotfiles_are_hidden_unless_asked(root):
    assert one(root, get("/.secret"))[0].status == 404
    assert one(root, get("/.secret"), dotfiles=True)[0].status == 200
    assert b".secret" not in one(root, get("/"))[0].body


def test_symlinks_leading_outside_are_refused(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "passwd").write_text("root:x:0:0\n")
    os.symlink(outside / "passwd", root / "link")
    os.symlink(outside, root / "linkdir")
    os.symlink(root / "hello.txt", root / "inner")
    assert one(root, get("/link"))[0].status == 403
    assert one(root, get("/linkdir/passwd"))[0].status == 403
    assert one(root, get("/inner"))[0].status == 200
    assert one(root, get("/link"), follow_symlinks=True)[0].body == b"root:x:0:0\n"


def test_special_files_are_refused(root):
    os.mkfifo(root / "fifo")
    assert one(root, get("/fifo"))[0].status == 403


def test_missing_and_file_with_slash_are_404(root):
    assert one(root, get("/nope.txt"))[0].status == 404
    assert one(root, get("/hello.txt/"))[0].status == 404


# -- directories --------------------------------------------------------------------------------------------------
def test_directory_without_slash_redirects(root):
    response, _, _ = one(root, get("/docs?x=1"))
    assert response.status == 301 and response.header("location") == "/docs/?x=1"


def test_directory_index_and_listing(root):
    assert one(root, get("/docs/"))[0].body == b"<h1>docs</h1>\n"
    listing = one(root, get("/"))[0]
    assert listing.header("content-type") == "text/html; charset=utf-8"
    assert b'href="docs/"' in listing.body and b'href="hello.txt"' in listing.body
    assert one(root, get("/empty/"), listing=False)[0].status == 403


# -- conditional requests and ranges ------------------------------------------------------------------------------
def test_if_none_match_gives_304(root):
    etag = one(root, get("/hello.txt"))[0].header("etag")
    response, _, _ = one(root, get("/hello.txt", f"If-None-Match: {etag}"))
    assert response.status == 304 and response.body == b"" and response.header("etag") == etag
    assert one(root, get("/hello.txt", 'If-None-Match: "other"'))[0].status == 200
    assert one(root, get("/hello.txt", "If-None-Match: *"))[0].status == 304


def test_if_modified_since(root):
    last = one(root, get("/hello.txt"))[0].header("last-modified")
    assert one(root, get("/hello.txt", f"If-Modified-Since: {last}"))[0].status == 304
    assert one(root, get("/hello.txt", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"))[0].status == 200
    assert one(root, get("/hello.txt", "If-Modified-Since: yesterday"))[0].status == 200


def test_one_range(root):
    response, _, _ = one(root, get("/hello.txt", "Range: bytes=0-4"))
    assert response.status == 206 and response.body == b"hello"
    assert response.header("content-range") == "bytes 0-4/13"
    assert one(root, get("/hello.txt", "Range: bytes=-6"))[0].body == b"world\n"
    assert one(root, get("/big.bin", "Range: bytes=102398-"))[0].body == bytes([254, 255])


def test_several_ranges_are_multipart(root):
    response, _, _ = one(root, get("/hello.txt", "Range: bytes=0-4,7-11"))
    assert response.status == 206
    kind = response.header("content-type")
    assert kind.startswith("multipart/byteranges; boundary=")
    boundary = kind.split("=", 1)[1]
    body = response.body.decode()
    assert body.count(f"--{boundary}\r\n") == 2 and body.endswith(f"--{boundary}--\r\n")
    assert "Content-Range: bytes 0-4/13\r\n\r\nhello" in body and "Content-Range: bytes 7-11/13\r\n\r\nworld" in body


def test_unsatisfiable_range_is_416(root):
    response, _, _ = one(root, get("/hello.txt", "Range: bytes=100-200"))
    assert response.status == 416 and response.header("content-range") == "bytes */13"


def test_bad_range_syntax_is_ignored(root):
    assert one(root, get("/hello.txt", "Range: bytes=x-y"))[0].status == 200
    assert one(root, get("/hello.txt", "Range: lines=1-2"))[0].status == 200


def test_if_range(root):
    etag = one(root, get("/hello.txt"))[0].header("etag")
    assert one(root, get("/hello.txt", "Range: bytes=0-4", f"If-Range: {etag}"))[0].status == 206
    assert one(root, get("/hello.txt", "Range: bytes=0-4", 'If-Range: "old"'))[0].status == 200
    assert one(root, get("/hello.txt", "Range: bytes=0-4", "If-Range: Sat, 01 Jan 2000 00:00:00 GMT"))[0].status == 200


# -- precompressed siblings ---------------------------------------------------------------------------------------
def test_precompressed_siblings(root):
    (root / "app.js").write_text("let x = 1;\n")
    (root / "app.js.gz").write_bytes(b"\x1f\x8bGZ")
    (root / "app.js.br").write_bytes(b"BR")
    response, _, _ = one(root, get("/app.js", "Accept-Encoding: gzip, deflate"))
    assert response.header("content-encoding") == "gzip" and response.body == b"\x1f\x8bGZ"
    assert response.header("vary") == "Accept-Encoding"
    assert response.header("content-type") == "text/javascript; charset=utf-8"
    assert one(root, get("/app.js", "Accept-Encoding: gzip, br"))[0].body == b"BR"
    assert one(root, get("/app.js", "Accept-Encoding: br;q=0, gzip"))[0].body == b"\x1f\x8bGZ"
    plain, _, _ = one(root, get("/app.js"))
    assert plain.body == b"let x = 1;\n" and plain.header("vary") == "Accept-Encoding"
    assert plain.header("content-encoding") is None


# -- hostile input ------------------------------------------------------------------------------------------------
SMUGGLING = {
    "cl-and-te": "Content-Length: 3\r\nTransfer-Encoding: chunked",
    "two-cl": "Content-Length: 3\r\nContent-Length: 3",
    "unknown-te": "Transfer-Encoding: gzip",
    "obs-fold": "X-A: b\r\n c",
    "space-before-colon": "X-A : b",
    "te-in-http10": None,
    "two-hosts": "Host: other.test",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_shapes_get_400_and_close(root, mode, case):
    if case == "te-in-http10":
        request = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    else:
        request = get("/hello.txt", SMUGGLING[case], method="POST") + b"abc"
    response, close, proto = one(root, request, mode)
    assert response.status == 400 and close and proto.state is State.CLOSING
    assert response.header("connection") == "close"


def test_missing_host_in_http11_is_400(root):
    response, close, _ = one(root, b"GET / HTTP/1.1\r\n\r\n")
    assert response.status == 400 and close


@pytest.mark.parametrize("mode", MODES)
def test_long_request_target_is_414(root, mode):
    response, close, _ = one(root, get("/" + "a" * 9000), mode)
    assert response.status == 414 and close


@pytest.mark.parametrize("mode", MODES)
def test_large_header_field_is_431(root, mode):
    response, close, _ = one(root, get("/", "X-Big: " + "b" * 9000), mode)
    assert response.status == 431 and close


def test_too_many_headers_is_431(root):
    response, close, _ = one(root, get("/", *[f"X-{i}: v" for i in range(150)]))
    assert response.status == 431 and close


def test_endless_header_value_is_cut_off(root):
    proto = server(root)
    replies = [proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")]
    for _ in range(100):
        replies.append(proto.data_received(b"v" * 1000))
        if replies[-1].close:
            break
    raw, close = materialise(replies)
    assert close and parse_responses(raw)[0].status == 431


def test_a_head_that_begins_after_a_large_body_in_the_same_read_is_no_431(root):
    """A client sends the next request right behind a large body (as wrk does once an early answer came): one read
    holds the body's last 60 KB and the next head's first bytes, which are not 60 KB of head (they were answered
    431 when the check counted the whole read)."""
    proto = server(root)
    body = b"x" * 100_000
    first = b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    second = get("/hello.txt")
    stream = first + second
    cut = len(first) + 20  # the second request's head is cut short
    replies = [proto.data_received(stream[:40_000]), proto.data_received(stream[40_000:cut])]
    replies.append(proto.data_received(stream[cut:]))
    raw, close = materialise(replies)
    assert [r.status for r in parse_responses(raw)] == [405, 200] and not close


def test_endless_request_line_is_414(root):
    proto = server(root)
    raw, close = materialise([proto.data_received(b"GET /" + b"a" * 40000)])
    assert close and parse_responses(raw)[0].status == 414


@pytest.mark.parametrize("version", ["2.0", "3.0", "0.9"])
@pytest.mark.parametrize("mode", MODES)
def test_unsupported_versions_are_505(root, version, mode):
    response, close, _ = one(root, get("/", version=version), mode)
    assert response.status in ((505,) if version != "0.9" else (400, 505)) and close


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", ["1.2", "1.9"])
def test_a_later_http1_minor_is_answered_as_11(root, version, mode):
    """RFC 9110 2.5: a server answers in the highest minor version it supports, and llhttp refuses 1.2."""
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt", version=version) + get("/page.html"), mode)
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, 200] and not close
    assert raw.startswith(b"HTTP/1.1 200") and responses[0].body == b"hello, world\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "x-custom, chunked"])
def test_a_transfer_coding_the_server_cannot_decode_is_501(root, coding, mode):
    request = get("/hello.txt", f"Transfer-Encoding: {coding}", method="POST") + b"3\r\nabc\r\n0\r\n\r\n"
    response, close, proto = one(root, request, mode)
    assert response.status == 501 and close and proto.state is State.CLOSING


@pytest.mark.parametrize("coding", ["chunked, gzip", "chunked, chunked", "identity"])
def test_chunked_not_final_or_twice_is_400(root, coding):
    request = get("/hello.txt", f"Transfer-Encoding: {coding}", method="POST") + b"0\r\n\r\n"
    response, close, _ = one(root, request)
    assert response.status == 400 and close


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", ["exa mple.test", "a/b", "a@b", "x:y", "[::1", 'h"q', "a:1:2"])
def test_an_invalid_host_is_400(root, host, mode):
    request = f"GET /hello.txt HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    response, close, _ = one(root, request, mode)
    assert response.status == 400 and close


@pytest.mark.parametrize(
    "host", ["example.test", "example.test:8080", "127.0.0.1:1", "[::1]:8080", "", "xn--bcher-kva.de"]
)
def test_valid_hosts_are_served(root, host):
    request = f"GET /hello.txt HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    assert one(root, request)[0].status == 200


def test_request_body_over_the_limit_is_413(root):
    proto = server(root, limits=HttpLimits(max_body=10))
    raw, close = feed(proto, get("/hello.txt", "Content-Length: 20") + b"x" * 20)
    assert parse_responses(raw)[0].status == 413 and close


def test_get_with_a_small_body_is_served_and_the_body_dropped(root):
    proto = server(root)
    raw, close = feed(proto, get("/hello.txt", "Content-Length: 3") + b"abc" + get("/page.html"))
    assert [r.status for r in parse_responses(raw)] == [200, 200] and not close


def test_upgrade_is_answered_then_closed(root):
    response, close, _ = one(root, get("/hello.txt", "Connection: Upgrade", "Upgrade: websocket") + b"\x81\x05hello")
    assert response.status == 200 and close


# -- the engine's events ------------------------------------------------------------------------------------------
def test_slow_headers_get_408_on_timeout(root):
    proto = server(root)
    assert proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow") == Reply(alarm=HttpLimits.header_timeout)
    raw, close = materialise([proto.timed_out()])
    assert close and parse_responses(raw)[0].status == 408


def test_header_deadline_is_armed_at_the_first_byte_and_cleared_with_the_head(root):
    proto = server(root, limits=HttpLimits(header_timeout=3.0))
    assert proto.data_received(b"G").alarm == 3.0
    assert proto.data_received(b"ET / HTTP/1.1\r\n").alarm is None  # still the same request: the clock runs on
    reply = proto.data_received(b"Host: x\r\n\r\n")
    assert reply.alarm == 0 and parse_responses(materialise([reply])[0])[0].status == 200


def test_a_whole_request_sets_no_alarm(root):
    """The common case leaves the engine's fast path open: no alarm to arm or clear."""
    proto = server(root)
    for _ in range(3):
        reply = as_reply(proto.data_received(get("/hello.txt")))
        assert reply.alarm is None and len(reply.send) == 1


def test_header_deadline_restarts_for_each_pipelined_request(root):
    proto = server(root, limits=HttpLimits(header_timeout=5.0))
    assert proto.data_received(b"GET /hello.txt HTTP/1.1\r\nHo").alarm == 5.0
    # The first request completes and the next begins in the same chunk: a fresh deadline for the second.
    assert proto.data_received(b"st: x\r\n\r\nGET / HTTP/1.1\r\n").alarm == 5.0
    assert proto.data_received(b"Host: x\r\n\r\n").alarm == 0


def test_header_deadline_answers_408(root):
    proto = server(root, limits=HttpLimits(header_timeout=1.0))
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ":
        proto.data_received(bytes([byte]))
    raw, close = materialise([proto.timed_out()])
    assert close and parse_responses(raw)[0].status == 408


def test_idle_keep_alive_just_closes_on_timeout(root):
    proto = server(root)
    feed(proto, get("/hello.txt"))
    reply = proto.timed_out()
    assert reply.close and reply.send == ()


def test_stop_closes_idle_connections_at_once(root):
    proto = server(root)
    feed(proto, get("/hello.txt"))
    assert proto.stop_requested().close


def test_stop_lets_a_request_in_flight_finish(root):
    proto = server(root)
    assert proto.data_received(b"GET /hello.txt HTTP/1.1\r\n") == Reply(alarm=HttpLimits.header_timeout)
    assert not proto.stop_requested().close
    raw, close = feed(proto, b"Host: x\r\n\r\n")
    response = parse_responses(raw)[0]
    assert response.status == 200 and close and response.header("connection") == "close"


def test_bad_input_after_close_is_ignored(root):
    proto = server(root)
    feed(proto, b"\x00\x01\x02")
    assert proto.data_received(b"GET / HTTP/1.1\r\n\r\n").send == ()


# -- the file cache never serves stale content --------------------------------------------------------------------
def test_changed_file_is_served_fresh(root):
    proto = server(root)
    assert parse_responses(feed(proto, get("/hello.txt"))[0])[0].body == b"hello, world\n"
    (root / "hello.txt").write_text("HELLO, WORLD\n")  # same size, likely the same second
    assert parse_responses(feed(proto, get("/hello.txt"))[0])[0].body == b"HELLO, WORLD\n"
    (root / "hello.txt").unlink()
    assert parse_responses(feed(proto, get("/hello.txt"))[0])[0].status == 404


def test_sibling_added_later_is_used(root):
    proto = server(root)
    gz = get("/page.html", "Accept-Encoding: gzip")
    assert parse_responses(feed(proto, gz)[0])[0].header("content-encoding") is None
    (root / "page.html.gz").write_bytes(b"GZ")
    response = parse_responses(feed(proto, gz)[0])[0]
    assert response.header("content-encoding") == "gzip" and response.body == b"GZ"


def test_file_swapped_for_an_outside_symlink_is_refused(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("secret\n")
    proto = server(root)
    for path in ("/hello.txt", "/big.bin"):
        assert parse_responses(feed(proto, get(path))[0])[0].status == 200
        (root / path[1:]).unlink()
        os.symlink(outside / "secret", root / path[1:])
        assert parse_responses(feed(proto, get(path))[0])[0].status == 403


def test_cached_ranges_and_conditionals(root):
    proto = server(root)
    first = parse_responses(feed(proto, get("/hello.txt"))[0])[0]
    again = parse_responses(feed(proto, get("/hello.txt", "Range: bytes=0-4,-3"))[0])[0]
    assert again.status == 206 and b"hello" in again.body and b"ld\n" in again.body
    etag = first.header("etag")
    assert parse_responses(feed(proto, get("/hello.txt", f"If-None-Match: {etag}"))[0])[0].status == 304
    big = parse_responses(feed(proto, get("/big.bin", "Range: bytes=10-19,100-109"))[0])[0]
    assert big.status == 206 and bytes(range(10, 20)) in big.body and bytes(range(100, 110)) in big.body


def test_an_illegal_move_names_the_state_and_the_event(root):
    from sockhop.errors import LocalProtocolError
    from sockhop.web.protocol import Event

    proto = server(root)
    with pytest.raises(LocalProtocolError, match="can't handle event COMPLETE .* in state IDLE"):
        proto.move(Event.COMPLETE)


# -- requests seen before, byte for byte, skip the parser -----------------------------------------------------------
REQUESTS = {
    "plain": get("/hello.txt"),
    "close": get("/hello.txt", "Connection: close"),
    "http10": get("/hello.txt", version="1.0"),
    "http10-keep-alive": get("/hello.txt", "Connection: keep-alive", version="1.0"),
    "head": get("/hello.txt", method="HEAD"),
    "range": get("/hello.txt", "Range: bytes=0-4"),
    "big": get("/big.bin"),
    "index": get("/docs/"),
    "redirect": get("/docs"),
    "missing": get("/nope.txt"),
    "hidden": get("/.secret"),
    "referer": get("/page.html", "Referer: http://r/", "User-Agent: t/1"),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_repeated_request_is_answered_as_the_first(root, name):
    """The second identical request is answered from the memo (and for a plain GET the cached wire bytes):
    byte for byte what the parser's way answered, on a fresh connection and on the same one."""
    request = REQUESTS[name]
    first = server(root)
    raw_first, close_first = feed(first, request)
    assert request in first.options.memo
    second = type(first)(first.options)
    second.connection_made(("127.0.0.1", 40000), ("127.0.0.1", 8080))
    raw_second, close_second = feed(second, request)
    assert second.parser is None  # never needed
    assert (raw_second, close_second) == (raw_first, close_first)
    if not close_first:
        assert feed(first, request) == (raw_first, False)
        assert second.state is State.IDLE


def test_a_conditional_repeat_still_answers_304(root):
    proto = server(root)
    etag = parse_responses(feed(proto, get("/hello.txt"))[0])[0].header("etag")
    conditional = get("/hello.txt", f"If-None-Match: {etag}")
    for _ in range(2):
        assert parse_responses(feed(proto, conditional)[0], heads=(True,))[0].status == 304


def test_only_a_request_alone_in_its_read_is_remembered(root):
    proto = server(root)
    feed(proto, get("/hello.txt") + get("/page.html"))  # two at once
    feed(proto, get("/hello.txt") + b"\x00")  # then garbage: 200, 400 and closed
    assert proto.options.memo == {}
    again = type(proto)(proto.options)
    raw, close = feed(again, get("/hello.txt") + b"\x00")
    assert [r.status for r in parse_responses(raw)] == [200, 400] and close


def test_repeats_still_count_towards_max_requests(root):
    proto = server(root, limits=HttpLimits(max_requests=3))
    closes = [feed(proto, get("/hello.txt"))[1] for _ in range(3)]
    assert closes == [False, False, True] and proto.state is State.CLOSING


def test_a_repeat_sees_a_changed_file(root):
    proto = server(root)
    feed(proto, get("/hello.txt"))
    (root / "hello.txt").write_text("changed, world\n")
    assert parse_responses(feed(proto, get("/hello.txt"))[0])[0].body == b"changed, world\n"
    (root / "hello.txt").unlink()
    assert parse_responses(feed(proto, get("/hello.txt"))[0])[0].status == 404
