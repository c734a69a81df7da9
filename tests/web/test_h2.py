"""HTTP/2 in memory: raw frames fed to the server's protocol -- the conformance cases h2spec checks (frame sizes,
stream states, HPACK errors, flow control, settings), the hostile clients (each test fails on a server without the
defence), and the one request handler behind both versions (ranges, conditional requests, precompressed siblings,
listings, the access log)."""

from __future__ import annotations

import gzip

import hpack
import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from sockhop.web.h2server import CONTROL, RESETS
from sockhop.web.protocol import HttpLimits
from tests.web.conftest import BIG
from tests.web.h2frames import (
    Feeder,
    continuation,
    data_frame,
    headers_frame,
    ping,
    raw_frame,
    rst,
    settings,
    window_update,
)
from tests.web.helpers import server

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 5, 6, 7, 9, 11


@pytest.fixture
def root(tmp_path):
    (tmp_path / "hello.txt").write_text("hello, world\n")
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "app.js").write_text("console.log('plain');\n" * 50)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress((tmp_path / "app.js").read_bytes()))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("# docs\n")
    return tmp_path


def connect(root, limits: HttpLimits | None = None, **settings_values: int) -> Feeder:
    feeder = Feeder(server(root, limits=limits))
    answers = feeder.open(**settings_values)
    assert answers.of(SettingsFrame), "the server's SETTINGS come first"
    return feeder


def get(feeder: Feeder, sid: int, path: str = "/hello.txt", **kw):
    return feeder.send(headers_frame(feeder.encoder, sid, path, **kw))


def assert_goaway(answers, code: int) -> None:
    assert answers.goaway is not None, f"no GOAWAY; frames: {answers.frames}"
    assert answers.goaway.error_code == code, answers.goaway
    assert answers.closed


# -- the shared handler ------------------------------------------------------------------------------------------
def test_get_a_file(root):
    feeder = connect(root)
    answers = get(feeder, 1)
    assert answers.headers[1][":status"] == "200"
    assert answers.headers[1]["content-length"] == "13"
    assert "connection" not in answers.headers[1]
    assert answers.bodies[1] == b"hello, world\n" and 1 in answers.ended


def test_an_invalid_authority_is_400(root):
    feeder = connect(root)
    block = feeder.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/hello.txt"),
                                   (":authority", "a b/c")])  # fmt: skip
    frame = HeadersFrame(1, block)
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    answers = feeder.send(frame.serialize())
    assert answers.headers[1][":status"] == "400"


def test_a_body_declared_over_max_body_is_413_and_a_small_one_dropped(root):
    feeder = connect(root, HttpLimits(max_body=10))
    length = (("content-length", "11"),)
    get(feeder, 1, method="POST", end=False, extra=length)
    assert feeder.answers.headers[1][":status"] == "413" and 1 in feeder.answers.ended
    get(feeder, 3, method="GET", end=False, extra=(("content-length", "3"),))
    answers = feeder.send(data_frame(3, b"abc", end=True))
    assert answers.headers[3][":status"] == "200" and answers.bodies[3] == b"hello, world\n"
    assert not answers.closed


def test_the_same_features_as_http11(root):
    feeder = connect(root)
    get(feeder, 1, "/big.bin", extra=(("range", "bytes=10-19"),))
    assert feeder.answers.headers[1][":status"] == "206" and feeder.answers.bodies[1] == BIG[10:20]
    etag = feeder.answers.headers[1]["etag"]
    get(feeder, 3, "/big.bin", extra=(("if-none-match", etag),))
    assert feeder.answers.headers[3][":status"] == "304" and 3 not in feeder.answers.bodies
    get(feeder, 5, "/app.js", extra=(("accept-encoding", "gzip"),))
    assert feeder.answers.headers[5]["content-encoding"] == "gzip"
    assert feeder.answers.bodies[5] == (root / "app.js.gz").read_bytes()
    get(feeder, 7, "/docs/")
    assert feeder.answers.headers[7][":status"] == "200" and b"readme.md" in feeder.answers.bodies[7]
    get(feeder, 9, "/docs")
    assert feeder.answers.headers[9][":status"] == "301"
    get(feeder, 11, "/nope")
    assert feeder.answers.headers[11][":status"] == "404"
    get(feeder, 13, "/hello.txt", method="HEAD")
    assert feeder.answers.headers[13]["content-length"] == "13" and 13 not in feeder.answers.bodies
    assert 13 in feeder.answers.ended
    get(feeder, 15, "/hello.txt", method="DELETE")
    assert feeder.answers.headers[15][":status"] == "405" and feeder.answers.headers[15]["allow"] == "GET, HEAD"
    get(feeder, 17, "/hello.txt", method="FROB")
    assert feeder.answers.headers[17][":status"] == "501"
    assert not feeder.answers.closed


def test_access_log_says_http2(root, tmp_path):
    from sockhop.web.accesslog import AccessLog

    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    feeder = Feeder(server(root, log=log))
    feeder.open()
    get(feeder, 1, extra=(("user-agent", "tester"),))
    feeder.proto.connection_lost()
    log.close()
    assert '"GET /hello.txt HTTP/2.0" 200 13 "-" "tester"' in path.read_text()


def test_a_preface_in_pieces(root):
    feeder = Feeder(server(root))
    feeder.send(b"PRI * HTTP/2.0\r\n")
    feeder.send(b"\r\nSM\r\n\r\n" + settings())
    answers = get(feeder, 1)
    assert answers.bodies[1] == b"hello, world\n"


# -- flow control ------------------------------------------------------------------------------------------------
def test_a_closed_window_holds_the_file_not_its_bytes(root):
    feeder = connect(root, initial_window_size=0)
    answers = get(feeder, 1, "/big.bin")
    assert answers.headers[1][":status"] == "200" and 1 not in answers.bodies
    assert feeder.alarm == HttpLimits().header_timeout, "a stalled stream arms the alarm"
    pending = feeder.proto.h2.streams[1].pieces
    assert all(not isinstance(piece, bytes) or len(piece) == 0 for piece in pending)
    received = b""
    for _ in range(200):
        feeder.send(window_update(1, 65536) + window_update(0, 65536))
        received = feeder.answers.bodies.get(1, b"")
        if 1 in feeder.answers.ended:
            break
        assert len(received) % 65536 == 0 and len(received) <= 65535 + 65536 * 200
    assert received == BIG
    assert feeder.alarm == 0.0, "the alarm is cleared once nothing waits on a window"


def test_a_window_shut_for_too_long_ends_the_connection(root):
    feeder = connect(root, initial_window_size=0)
    get(feeder, 1, "/big.bin")
    feeder.send(ping())  # the client is not idle, its window stays shut
    answers = feeder.event("timed_out")
    assert_goaway(answers, NO_ERROR)


def test_wide_windows_are_served_a_burst_at_a_time(root, tmp_path):
    """A client granting 1 GiB windows and asking for four 1 MiB files: each reply holds one burst and asks to be
    called back when it has gone (WHEN_DRAINED), taking the streams in turn -- never the four files at once."""
    from sockhop.web.h2server import BURST

    feeder = connect(root, initial_window_size=2**30)
    feeder.send(window_update(0, 2**30))
    requests = b"".join(headers_frame(feeder.encoder, sid, "/big.bin") for sid in (1, 3, 5, 7))
    answers = feeder.send(requests)
    assert all(answers.bodies[sid] == BIG for sid in (1, 3, 5, 7))
    assert feeder.bursts >= 3 and feeder.largest < BURST + 64 * 1024


def test_window_overflow_is_a_flow_control_error(root):
    feeder = connect(root)
    assert_goaway(feeder.send(window_update(0, 2**31 - 1)), FLOW_CONTROL_ERROR)


def test_a_body_beyond_the_window_is_a_flow_control_error(root):
    feeder = connect(root)
    get(feeder, 1, method="GET", end=False)
    answers = feeder.send(b"".join(data_frame(1, b"x" * 16384) for _ in range(5)))
    assert_goaway(answers, FLOW_CONTROL_ERROR)


# -- settings, frame sizes, stream states, HPACK -----------------------------------------------------------------
def test_settings_are_acknowledged(root):
    feeder = connect(root)
    acks = [f for f in feeder.answers.of(SettingsFrame) if "ACK" in f.flags]
    assert len(acks) == 1
    server_settings = [f for f in feeder.answers.of(SettingsFrame) if "ACK" not in f.flags][0].settings
    assert server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == HttpLimits().max_streams
    assert server_settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == HttpLimits().max_head


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (settings(initial_window_size=2**31), FLOW_CONTROL_ERROR),
        (settings(max_frame_size=16383), PROTOCOL_ERROR),
        (settings(enable_push=2), PROTOCOL_ERROR),
        (raw_frame(4, 0, 1, b""), PROTOCOL_ERROR),  # SETTINGS on a stream
        (raw_frame(4, 1, 0, b"\x00\x00\x00\x00\x00\x00"), FRAME_SIZE_ERROR),  # SETTINGS ACK with a payload
        (raw_frame(4, 0, 0, b"\x00\x03\x00"), FRAME_SIZE_ERROR),  # not a multiple of 6
        (raw_frame(6, 0, 0, b"1234567"), FRAME_SIZE_ERROR),  # PING of 7 bytes
        (raw_frame(6, 0, 1, b"12345678"), PROTOCOL_ERROR),  # PING on a stream
        (raw_frame(8, 0, 0, b"\x00\x00\x00"), FRAME_SIZE_ERROR),  # WINDOW_UPDATE of 3 bytes
        (window_update(0, 0) if False else raw_frame(8, 0, 0, b"\x00\x00\x00\x00"), PROTOCOL_ERROR),  # 0 increment
        (raw_frame(0, 0, 0, b"x"), PROTOCOL_ERROR),  # DATA on stream 0
        (raw_frame(1, 5, 2, b""), PROTOCOL_ERROR),  # HEADERS on an even (server) stream
        (raw_frame(3, 0, 0, b"\x00\x00\x00\x08"), PROTOCOL_ERROR),  # RST_STREAM on stream 0
        (raw_frame(3, 0, 1, b"\x00\x00\x00\x08"), PROTOCOL_ERROR),  # RST_STREAM on an idle stream
        (raw_frame(0, 0, 1, b"x"), PROTOCOL_ERROR),  # DATA on an idle stream
        (raw_frame(9, 4, 1, b""), PROTOCOL_ERROR),  # CONTINUATION with no HEADERS before it
        (raw_frame(0, 0, 1, b"x" * 16385), FRAME_SIZE_ERROR),  # over SETTINGS_MAX_FRAME_SIZE
        (raw_frame(7, 0, 1, b"\x00" * 8), PROTOCOL_ERROR),  # GOAWAY on a stream
    ],
)
def test_connection_errors(root, frame, code):
    feeder = connect(root)
    assert_goaway(feeder.send(frame), code)


def test_an_hpack_error_is_a_compression_error(root):
    feeder = connect(root)
    answers = feeder.send(raw_frame(1, 5, 1, b"\xff\xff\xff\xff\x0f"))  # an index far past any table
    assert_goaway(answers, COMPRESSION_ERROR)


def test_frames_on_a_closed_stream(root):
    feeder = connect(root)
    get(feeder, 1)
    assert 1 in feeder.answers.ended
    answers = feeder.send(data_frame(1, b"late"))  # RFC 9113 5.1: a stream error (or a connection error) STREAM_CLOSED
    assert answers.resets(STREAM_CLOSED) == [1] and not answers.closed
    assert get(feeder, 3).bodies[3] == b"hello, world\n"


def test_frames_on_a_reset_stream_get_rst_and_others_go_on(root):
    feeder = connect(root, initial_window_size=0)
    get(feeder, 1, "/big.bin")
    feeder.send(rst(1))
    answers = feeder.send(data_frame(1, b"late"))
    assert 1 in answers.resets(STREAM_CLOSED) and not answers.closed
    get(feeder, 3)
    assert feeder.answers.headers[3][":status"] == "200"


def test_a_lower_stream_id_after_a_higher_one(root):
    feeder = connect(root)
    get(feeder, 5)
    assert_goaway(get(feeder, 3), PROTOCOL_ERROR)


def test_an_unknown_frame_type_is_ignored(root):
    feeder = connect(root)
    feeder.send(raw_frame(0x42, 0, 0, b"whatever"))
    assert get(feeder, 1).bodies[1] == b"hello, world\n"


def test_ping_is_answered(root):
    feeder = connect(root)
    answers = feeder.send(ping(b"abcdefgh"))
    acks = [f for f in answers.of(PingFrame) if "ACK" in f.flags]
    assert acks and acks[0].opaque_data == b"abcdefgh"


# -- hostile clients ---------------------------------------------------------------------------------------------
def test_too_many_concurrent_streams_are_refused_one_by_one(root):
    limit = HttpLimits().max_streams
    feeder = connect(root, initial_window_size=0)
    feeder.send(b"".join(headers_frame(feeder.encoder, 1 + 2 * i, "/big.bin") for i in range(limit + 2)))
    refused = feeder.answers.resets(REFUSED_STREAM)
    assert refused == [1 + 2 * limit, 3 + 2 * limit]
    assert not feeder.answers.closed
    feeder.send(window_update(1, 2**20) + window_update(0, 2**20))
    assert feeder.answers.bodies[1] == BIG[: 2**20]  # the streams under the limit are served
    later = 1 + 2 * (limit + 2)
    assert get(feeder, later, "/hello.txt").headers[later][":status"] == "200"  # stream 1 is done: a slot is free
    assert get(feeder, later + 2, "/hello.txt").resets(REFUSED_STREAM)[-1] == later + 2  # and now full again


def test_rapid_reset(root):
    """CVE-2023-44487: streams opened and cancelled at once, over and over."""
    feeder = connect(root)
    flood = b"".join(headers_frame(feeder.encoder, 1 + 2 * i) + rst(1 + 2 * i) for i in range(int(RESETS.burst) + 50))
    assert_goaway(feeder.send(flood), ENHANCE_YOUR_CALM)


def test_resets_within_the_budget_are_fine(root):
    feeder = connect(root)
    feeder.send(b"".join(headers_frame(feeder.encoder, 1 + 2 * i) + rst(1 + 2 * i) for i in range(20)))
    assert not feeder.answers.closed
    assert get(feeder, 41).bodies[41] == b"hello, world\n"


def test_continuation_flood(root):
    """A header block that never ends: 8 frames of 8 KiB are within h2's own count (64), not within max_head."""
    feeder = connect(root)
    start = headers_frame(feeder.encoder, 1, end_headers=False)
    flood = start + b"".join(continuation(1, b"\x00" * 8192) for _ in range(8))
    assert_goaway(feeder.send(flood), ENHANCE_YOUR_CALM)


def test_hpack_bomb(root):
    """A 4 KiB header value put in the dynamic table once, then referenced by one byte each: 10 references decode
    to 40 KiB -- over max_head (32 KiB), though under h2's own default (64 KiB)."""
    feeder = connect(root)
    encoder = hpack.Encoder()
    first = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x"),
                            ("x-bomb", "a" * 4000)])  # fmt: skip
    feeder.send(raw_frame(1, 5, 1, first))
    index = bytes([0x80 | 62])  # the newest entry of the dynamic table
    block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")]) + index * 10
    assert_goaway(feeder.send(raw_frame(1, 5, 3, block)), ENHANCE_YOUR_CALM)


@pytest.mark.parametrize("flood", ["settings", "ping"])
def test_control_frame_floods(root, flood):
    feeder = connect(root)
    frame = settings() if flood == "settings" else ping()
    assert_goaway(feeder.send(frame * (int(CONTROL.burst) + 20)), ENHANCE_YOUR_CALM)


def test_budgets_refill_with_time(root):
    clock = [1000.0]
    feeder = Feeder(server(root))
    feeder.proto.options = feeder.proto.options.__class__(
        feeder.proto.site, feeder.proto.limits, None, clock=lambda: clock[0]
    )
    feeder.open()
    for _ in range(5):
        feeder.send(ping() * int(CONTROL.burst // 2))
        clock[0] += CONTROL.burst / CONTROL.rate
    assert not feeder.answers.closed


# -- stopping ----------------------------------------------------------------------------------------------------
def test_graceful_stop_lets_open_streams_finish(root):
    feeder = connect(root, initial_window_size=0)
    get(feeder, 1, "/big.bin")
    answers = feeder.event("stop_requested")
    goaway = answers.goaway
    assert goaway is not None and goaway.last_stream_id == 1 and goaway.error_code == NO_ERROR
    assert not answers.closed
    get(feeder, 3)  # after GOAWAY: not answered
    assert 3 in feeder.answers.resets(REFUSED_STREAM)
    feeder.send(window_update(1, len(BIG)) + window_update(0, len(BIG)))
    assert feeder.answers.bodies[1] == BIG
    assert feeder.answers.closed


def test_graceful_stop_when_idle_closes_at_once(root):
    feeder = connect(root)
    answers = feeder.event("stop_requested")
    assert isinstance(answers.frames[-1], GoAwayFrame) and answers.closed


def test_max_requests_ends_the_connection_with_goaway(root):
    """--max-requests counts streams as HTTP/1.1 counts requests: GOAWAY after the last, newer streams refused."""
    feeder = connect(root, HttpLimits(max_requests=3))
    answers = feeder.send(b"".join(headers_frame(feeder.encoder, sid) for sid in (1, 3, 5, 7, 9)))
    assert [sid for sid in (1, 3, 5) if answers.bodies.get(sid) == b"hello, world\n"] == [1, 3, 5]
    assert answers.resets(REFUSED_STREAM) == [7, 9]
    assert answers.goaway is not None and answers.goaway.last_stream_id == 5 and answers.closed


def test_a_body_after_the_answer_is_stopped_with_rst_no_error(root):
    """Past max_body; within it the client may finish sending (curl 7.88 reports a reset transfer as failed)."""
    feeder = connect(root, HttpLimits(max_body=150))
    get(feeder, 1, method="GET", end=False)
    answers = feeder.send(data_frame(1, b"x" * 100))
    assert answers.bodies[1] == b"hello, world\n" and answers.resets() == []
    answers = feeder.send(data_frame(1, b"x" * 100))
    assert answers.bodies[1] == b"hello, world\n" and answers.resets(NO_ERROR) == [1]
    assert not answers.closed and get(feeder, 3).bodies[3] == b"hello, world\n"


def test_a_body_longer_than_the_window_is_granted_more_window_after_the_answer(root):
    """The answer goes out before the body has all arrived; the stream, half closed, still gives its window back,
    so the client can finish sending (no reset within max_body)."""
    from hyperframe.frame import WindowUpdateFrame

    feeder = connect(root)
    get(feeder, 1, method="GET", end=False, extra=(("content-length", "100000"),))
    assert 1 in feeder.answers.ended
    granted = {0: 65535, 1: 65535}
    sent = 0
    while sent < 100_000:
        size = min(16384, 100_000 - sent, granted[0], granted[1])
        assert size > 0, f"the window stayed shut after {sent} bytes"
        before = len(feeder.answers.frames)
        answers = feeder.send(data_frame(1, b"x" * size, end=sent + size == 100_000))
        sent += size
        granted[0] -= size
        granted[1] -= size
        for frame in answers.frames[before:]:
            if isinstance(frame, WindowUpdateFrame):
                granted[frame.stream_id] += frame.window_increment
    assert answers.resets() == [] and not answers.closed
    assert get(feeder, 3).bodies[3] == b"hello, world\n"


class _Forgetful(dict):
    def __setitem__(self, key, value) -> None:  # remembers nothing: every block is decoded and checked
        pass


def test_a_remembered_request_block_answers_as_decoding_it_would(root):
    """Blocks seen before are replayed only while the HPACK table is as it was: the same frames to a server that
    remembers and to one that does not get the same answers, whatever the table does in between."""
    encoder = hpack.Encoder()
    blocks = [encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/hello.txt"), (":authority", "x")])]
    blocks.append(
        encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/hello.txt"), (":authority", "x")])
    )
    blocks.append(blocks[-1])  # the same bytes again: a replay
    blocks.append(encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/big.bin"), (":authority", "x"),
                                  ("range", "bytes=0-3")]))  # fmt: skip
    blocks.append(blocks[1])  # the old bytes, now meaning something else: the table has moved on
    blocks.append(
        encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/hello.txt"), (":authority", "x")])
    )
    frames = b"".join(raw_frame(1, 5, 1 + 2 * i, block) for i, block in enumerate(blocks))
    remembering, forgetting = connect(root), connect(root)
    forgetting.proto.h2.conn.seen = _Forgetful()
    for feeder in (remembering, forgetting):
        for i in range(len(blocks)):
            feeder.send(frames[sum(9 + len(b) for b in blocks[:i]) : sum(9 + len(b) for b in blocks[: i + 1])])
    assert remembering.answers.headers.keys() == forgetting.answers.headers.keys()
    for sid, head in forgetting.answers.headers.items():
        assert remembering.answers.headers[sid][":status"] == head[":status"], sid
    assert remembering.answers.bodies == forgetting.answers.bodies
    assert (remembering.answers.goaway is None) == (forgetting.answers.goaway is None)
    assert remembering.answers.bodies[5] == b"hello, world\n"  # the replayed one
    assert remembering.proto.h2.conn.seen


def test_http11_is_untouched(root):
    proto = server(root)
    reply = proto.data_received(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not hasattr(proto, "h2") or proto.state.name != "HTTP2"
    assert b"hello, world" in (reply if isinstance(reply, bytes) else b"".join(reply.send))


def test_response_heads_use_no_dynamic_table_and_are_kept(root):
    """Heads are static-table entries and literals never indexed, so one encoded block serves every connection; a
    client shrinking the table still gets the size update its decoder waits for (RFC 7541 4.2)."""
    first, second = connect(root), connect(root, header_table_size=0)
    get(first, 1)
    get(second, 1)
    get(second, 3)
    block = lambda feeder, sid: [f for f in feeder.answers.of(HeadersFrame) if f.stream_id == sid][0].data  # noqa: E731
    assert block(second, 1)[:1] == b"\x20" and block(second, 1)[1:] == block(first, 1) == block(second, 3)
    assert second.answers.headers[3] == first.answers.headers[1]
    decoder = hpack.Decoder()
    decoder.decode(block(first, 1))
    assert len(decoder.header_table.dynamic_entries) == 0


def test_headers_frame_fields(root):
    feeder = connect(root)
    answers = get(feeder, 1)
    frame = [f for f in answers.of(HeadersFrame) if f.stream_id == 1][0]
    assert "END_HEADERS" in frame.flags
    assert answers.headers[1]["server"].startswith("sockhop/")
