"""The reverse proxy over HTTP/2 under every model: curl (h2c with prior knowledge, h2 by ALPN over TLS), nghttp
(several streams at once on one connection) and raw frames (tests/web/h2frames.py's Wire) through `sockhop serve web
--proxy` to Python's http.server (tests/web/upstreams.py) -- bodies both ways, 502/504, an upstream dying mid-body,
a client's RST_STREAM, and a shut window holding the upstream back."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, WindowUpdateFrame

from tests.support import require_tool
from tests.tls_certs import LocalCA
from tests.web.conftest import MODELS, curl, start_web
from tests.web.h2frames import PREFACE, Wire, data_frame, headers_frame, rst, settings, window_update
from tests.web.test_https import https_web
from tests.web.upstreams import CLOSED, WRITTEN, pattern

INTERNAL_ERROR = 2


@pytest.fixture(scope="module", params=MODELS)
def proxy(request, upstreams, tmp_path_factory):
    site = tmp_path_factory.mktemp("proxysite")
    (site / "static.txt").write_text("static\n")
    ca = LocalCA(tmp_path_factory.mktemp("pki"))
    up = f"http://127.0.0.1:{upstreams.port}"
    server = https_web(
        site,
        request.param,
        ca.issue("good", ["localhost", "127.0.0.1"]),
        "--proxy", f"/app/={up}/",
        "--proxy", f"/dead/=http://127.0.0.1:{upstreams.dead_port}/",
        "--proxy", f"/tls/=https://127.0.0.1:{upstreams.port_of('tls')}/",
        "--proxy-ca", upstreams.ca,
        "--proxy-read-timeout", "1",
        "--max-body", "64M",
        "--idle-timeout", "5",
        "--grace", "2",
    )  # fmt: skip
    server.plain = "http://{}:{}".format(*server.address("web", "tcp"))
    server.tls = "https://{}:{}".format(*server.address("web", "tls"))
    server.hostport = server.address("web", "tcp")
    server.ca = str(ca.pem)
    server.model = request.param
    yield server
    server.stop()
    if server.proc.stderr:
        server.proc.stderr.close()


def h2c(proxy, path: str, *args: str) -> subprocess.CompletedProcess:
    # One URL per curl over h2c: curl 7.88 (Debian 12) fails reusing a prior-knowledge connection (curl/curl#10634).
    return curl("--http2-prior-knowledge", *args, proxy.plain + path)


def test_get_head_and_static_files_over_h2c(proxy):
    got = h2c(proxy, "/app/hello", "-i")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(b"HTTP/2 200") and b"\r\nvia: 1.1 sockhop\r\n" in got.stdout
    assert got.stdout.endswith(b"\r\n\r\nupstream hello\n")
    head = h2c(proxy, "/app/blob/5000", "-I")
    assert head.stdout.startswith(b"HTTP/2 200") and b"content-length: 5000\r\n" in head.stdout, head
    static = h2c(proxy, "/static.txt", "-i")  # the server keeps HTTP/2 for what it serves itself
    assert static.stdout.startswith(b"HTTP/2 200") and static.stdout.endswith(b"static\n")
    assert b"via:" not in static.stdout


def test_the_upstream_is_told_who_asked_and_nothing_hop_by_hop(proxy, upstreams):
    got = h2c(proxy, "/app/headers?q=1", "-H", "Cookie: a=1", "-H", "Cookie: b=2", "-H", "TE: trailers")
    head = json.loads(got.stdout)
    headers = {k.lower(): v for k, v in head["headers"]}
    assert head["path"] == "/headers?q=1"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    assert headers["host"] == f"127.0.0.1:{upstreams.port}"
    assert headers["x-forwarded-host"] == "{}:{}".format(*proxy.hostport)
    assert headers["via"] == "2.0 sockhop" and headers["forwarded"].startswith("for=127.0.0.1;proto=http")
    assert headers["cookie"] == "a=1; b=2"  # HTTP/2's cookie fields, one field again for HTTP/1.1
    assert "te" not in headers and "connection" not in headers


def test_a_download_over_tls_by_alpn(proxy):
    size = 3 * 1024 * 1024 + 5
    got = curl("--http2", "--cacert", proxy.ca, "-w", "%{http_version}", proxy.tls + f"/app/blob/{size}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == pattern(size) + b"2"


def test_an_upload_streams_to_the_upstream(proxy, tmp_path):
    body = pattern(2 * 1024 * 1024 + 17)
    (tmp_path / "up.bin").write_bytes(body)
    got = h2c(proxy, "/app/upload", "--data-binary", f"@{tmp_path / 'up.bin'}")
    assert json.loads(got.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}, got.stderr
    # No length given (curl -T from a pipe): the upstream gets it chunked.
    sent = subprocess.run(
        [require_tool("curl"), "-sS", "--http2", "--cacert", proxy.ca, "-T", "-", proxy.tls + "/app/upload"],
        input=body[:300000],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert json.loads(sent.stdout)["sha256"] == hashlib.sha256(body[:300000]).hexdigest(), sent.stderr


def test_a_tls_upstream_both_ways(proxy, tmp_path):
    assert h2c(proxy, "/tls/hello").stdout == b"upstream hello\n"
    body = pattern(1024 * 1024 + 3)
    (tmp_path / "up.bin").write_bytes(body)
    got = h2c(proxy, "/tls/upload", "--data-binary", f"@{tmp_path / 'up.bin'}")
    assert json.loads(got.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}, got.stderr


def test_no_upstream_is_502_a_silent_one_504(proxy):
    assert h2c(proxy, "/dead/hello", "-o", "/dev/null", "-w", "%{http_code}").stdout == b"502"
    assert h2c(proxy, "/app/slow", "-o", "/dev/null", "-w", "%{http_code}").stdout == b"504"


def test_an_upstream_dying_mid_body_is_a_failed_transfer(proxy):
    got = h2c(proxy, "/app/die", "-o", "/dev/null")
    assert got.returncode in (18, 92), got  # the stream reset (curl: 92), never a whole answer
    assert h2c(proxy, "/app/hello").stdout == b"upstream hello\n"


def test_several_streams_at_once_on_one_connection(proxy):
    nghttp = require_tool("nghttp")
    urls = [proxy.plain + p for p in ("/app/blob/1500000", "/app/die", "/static.txt", "/app/hello", "/dead/x")]
    got = subprocess.run([nghttp, "-n", "-s", *urls], capture_output=True, timeout=30, check=False)
    out = got.stdout.decode()
    rows = {line.split()[-1]: line.split() for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert rows["/app/blob/1500000"][4:6] == ["200", "1M"], out
    assert rows["/static.txt"][4] == "200" and rows["/app/hello"][4] == "200" and rows["/dead/x"][4] == "502", out
    assert "/app/die" not in rows or rows["/app/die"][4] == "200", out  # reset: nghttp lists no end for it


def test_httpx_streams_on_one_connection(proxy):
    httpx = pytest.importorskip("httpx")
    import ssl

    context = ssl.create_default_context(cafile=proxy.ca)
    with httpx.Client(http2=True, verify=context) as client:
        answers = [client.get(proxy.tls + p) for p in ("/app/blob/1000000", "/static.txt", "/app/hello", "/dead/")]
        posted = client.post(proxy.tls + "/app/upload", content=pattern(100000))
    assert [a.http_version for a in answers] == ["HTTP/2"] * 4
    assert [a.status_code for a in answers] == [200, 200, 200, 502]
    assert answers[0].content == pattern(1000000) and answers[2].text == "upstream hello\n"
    assert posted.json()["size"] == 100000


def _wire(proxy, **values: int) -> Wire:
    wire = Wire(*proxy.hostport)
    wire.send(PREFACE + settings(**values))
    return wire


def _body_digest(wire: Wire, sid: int, timeout: float = 20) -> str:
    """Read frames until ``sid`` ends, hashing its DATA as it comes (Answers keeps bodies whole: too slow for
    tens of MiB); other frames are skipped. Assumes nothing of ``sid`` was read yet besides its head."""
    digest = hashlib.sha256()
    buf = bytearray(wire.answers.buffer)
    wire.answers.buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            if stream == sid and kind == 0:  # DATA (the server pads nothing)
                digest.update(buf[9 : 9 + length])
            del buf[: 9 + length]
            if stream == sid and flags & 1:
                wire.answers.buffer = bytes(buf)
                return digest.hexdigest()
        wire.sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = wire.sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return f"unfinished: {bytes(buf[:64])!r} {len(buf)}"


def test_a_shut_window_holds_the_upstream_back_and_a_reset_closes_it(proxy):
    """The client grants no window: the proxy holds a bounded amount and stops reading the upstream, whose writes
    stall once the sockets' buffers are full; opening the window lets the rest through, whole."""
    size = 32 * 1024 * 1024
    key = f"{proxy.model}-window"
    wire = _wire(proxy, initial_window_size=0)
    try:
        wire.send(headers_frame(wire.encoder, 1, f"/app/stream/{size}?{key}"))
        wire.read_until(lambda a: 1 in a.headers)
        assert wire.answers.headers[1][":status"] == "200"
        time.sleep(0.8)
        held = WRITTEN[key]
        time.sleep(0.4)
        assert WRITTEN[key] == held < 16 * 1024 * 1024, (held, WRITTEN[key])  # stalled, far from the 32 MiB
        wire.send(window_update(0, 2**31 - 1 - 65535) + settings(initial_window_size=2**31 - 1))
        assert _body_digest(wire, 1) == hashlib.sha256(pattern(size)).hexdigest()
        # A second stream on the same connection, reset by the client mid-way: its upstream connection closes.
        key2 = f"{proxy.model}-reset"
        wire.send(headers_frame(wire.encoder, 3, f"/app/stream/{size}?{key2}"))
        wire.read_until(lambda a: len(a.bodies.get(3, b"")) > 1024 * 1024)
        wire.send(rst(3))
        deadline = time.monotonic() + 5
        while key2 not in CLOSED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert key2 in CLOSED and WRITTEN[key2] < size
        wire.send(headers_frame(wire.encoder, 5, "/app/hello"))  # and the connection goes on
        wire.read_until(lambda a: 5 in a.ended)
        assert wire.answers.bodies[5] == b"upstream hello\n"
        assert 3 not in wire.answers.resets(INTERNAL_ERROR)
        assert any(isinstance(f, HeadersFrame) and f.stream_id == 5 for f in wire.answers.frames)
    finally:
        wire.close()


def test_an_upstream_s_trailers_end_the_stream(proxy):
    wire = _wire(proxy)
    try:
        wire.send(headers_frame(wire.encoder, 1, "/app/trailers"))
        answers = wire.read_until(lambda a: 1 in a.ended)
        heads = [f for f in answers.frames if isinstance(f, HeadersFrame) and f.stream_id == 1]
        assert len(heads) == 2 and "END_STREAM" in heads[1].flags  # the head, then the trailers ending it
        assert answers.headers[1] == {"x-checksum": "42"} and answers.bodies[1] == b"sum: 42\n"
    finally:
        wire.close()


class Sink:
    """An upstream that accepts and never reads: what the proxy hands it fills the sockets' buffers, then stops."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _upload(wire: Wire, sid: int, total: int) -> int:
    """Send up to ``total`` zero bytes on ``sid`` as the windows allow; stop when no window comes for a second or
    the stream is answered. What was sent."""
    sent, counted, piece = 0, 0, bytes(16384)
    granted = {0: 65535, sid: 65535}
    while sent < total and sid not in wire.answers.headers:
        room = min(granted[0], granted[sid]) - sent
        if room >= len(piece):
            frames = min(room // len(piece), 64)
            wire.send(b"".join(data_frame(sid, piece) for _ in range(frames)))
            sent += frames * len(piece)
            continue
        answers = wire.read_until(
            lambda a, seen=counted: len(a.of(WindowUpdateFrame)) > seen or sid in a.headers, timeout=1.0
        )
        updates = answers.of(WindowUpdateFrame)
        if len(updates) == counted or answers.closed:
            break  # no window for a second: held back
        for frame in updates[counted:]:
            granted[frame.stream_id] = granted.get(frame.stream_id, 0) + frame.window_increment
        counted = len(updates)
    return sent


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_an_upload_is_held_back_by_the_window_while_the_upstream_does_not_read(model, tmp_path):
    """The client's windows open again only as the upstream takes the bytes: against an upstream that reads
    nothing, a client with 64 MiB to send gets a few MiB of window (the sockets' buffers), then none."""
    sink = Sink()
    server = start_web(tmp_path, model, "--proxy", f"/sink/=http://127.0.0.1:{sink.port}/", "--max-body", "100M")
    wire = Wire(*server.address("web"))
    try:
        wire.send(PREFACE + settings())
        wire.send(headers_frame(wire.encoder, 1, "/sink/up", method="POST", end=False))
        sent = _upload(wire, 1, 64 * 1024 * 1024)
        assert 256 * 1024 < sent < 16 * 1024 * 1024, sent  # windows came back as the upstream took bytes, then not
        assert not wire.answers.of(DataFrame) and not wire.answers.resets()
    finally:
        wire.close()
        sink.close()
        server.stop()


def test_a_body_past_max_body_is_413(tmp_path):
    sink = Sink()
    server = start_web(tmp_path, "eventloop", "--proxy", f"/sink/=http://127.0.0.1:{sink.port}/", "--max-body", "1M")
    wire = Wire(*server.address("web"))
    try:
        wire.send(PREFACE + settings())
        # Said in advance: refused before a byte of it is read.
        wire.send(
            headers_frame(wire.encoder, 1, "/sink/a", method="POST", end=False, extra=(("content-length", "2000000"),))
        )
        # Found out on the way (no length): refused once past it, and the upstream connection dropped.
        wire.send(headers_frame(wire.encoder, 3, "/sink/b", method="POST", end=False))
        assert _upload(wire, 3, 8 * 1024 * 1024) < 8 * 1024 * 1024  # it stopped: answered
        wire.read_until(lambda a: 1 in a.headers and 3 in a.headers)
        assert wire.answers.headers[1][":status"] == "413" and wire.answers.headers[3][":status"] == "413"
        assert len(sink.held) == 1  # stream 1 never reached it
        upstream = sink.held[0]
        upstream.settimeout(5)
        while upstream.recv(1 << 20):  # what the proxy sent before it gave up, then its close
            pass
    finally:
        wire.close()
        sink.close()
        server.stop()


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_a_graceful_stop_lets_a_proxied_stream_finish(upstreams, tmp_path, model):
    server = start_web(tmp_path, model, "--grace", "5", "--proxy", f"/app/=http://127.0.0.1:{upstreams.port}/")
    wire = Wire(*server.address("web"))
    try:
        wire.send(PREFACE + settings())
        wire.send(headers_frame(wire.encoder, 1, "/app/chunked"))  # three chunks, 50 ms apart
        wire.read_until(lambda a: 1 in a.headers)
        server.proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        answers = wire.read_until(lambda a: False, timeout=10)  # until the server closes: soon after the end
        assert time.monotonic() - asked < 3
        assert answers.bodies[1] == b"one two three\n" and 1 in answers.ended
        goaway = answers.of(GoAwayFrame)
        assert goaway and goaway[0].last_stream_id == 1
        assert server.proc.wait(10) == 0
    finally:
        wire.close()
        server.stop()


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_the_idle_timeout_while_an_upstream_keeps_a_stream_waiting_is_504(upstreams, tmp_path, model):
    up = f"http://127.0.0.1:{upstreams.port}/"
    server = start_web(
        tmp_path, "eventloop", "--proxy", f"/app/={up}", "--idle-timeout", "1", "--proxy-read-timeout", "9"
    )
    wire = Wire(*server.address("web"))
    try:
        wire.send(PREFACE + settings())
        wire.send(headers_frame(wire.encoder, 1, "/app/slow"))  # answers after 3 s
        answers = wire.read_until(lambda a: False, timeout=5)
        assert answers.headers[1][":status"] == "504" and 1 in answers.ended and answers.closed
        assert answers.of(GoAwayFrame)
    finally:
        wire.close()
        server.stop()
