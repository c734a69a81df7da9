"""HTTP/2 against a real `sockhop serve web` under every model: curl (--http2 by ALPN, --http2-prior-knowledge for
h2c), nghttp and h2load (nghttp2-client), httpx with HTTP/2; a hostile client refused while others are served, a
shut window cut off by its deadline, GOAWAY on a graceful stop."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.support import require_tool
from tests.tls_certs import LocalCA
from tests.web.conftest import BIG, MODELS
from tests.web.h2frames import PREFACE, Wire, headers_frame, ping, rst, settings, window_update
from tests.web.test_https import https_web

pytestmark = pytest.mark.interop

ENHANCE_YOUR_CALM = 11


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = LocalCA(folder)
    return {"ca": ca, "good": ca.issue("good", ["localhost", "127.0.0.1"])}


@pytest.fixture(scope="module", params=MODELS)
def h2web(request, site, pki):
    server = https_web(site, request.param, pki["good"], "--idle-timeout", "5", "--grace", "3", "--header-timeout", "2")
    tls = server.address("web", "tls")
    plain = server.address("web", "tcp")
    try:
        yield {
            "tls": "https://{}:{}".format(*tls),
            "plain": "http://{}:{}".format(*plain),
            "address": plain,
            "ca": str(pki["ca"].pem),
        }
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def run(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, timeout=timeout, check=False)


def test_curl_h2c_prior_knowledge(h2web):
    curl = require_tool("curl")
    url = h2web["plain"]
    # One URL per curl: curl 7.88 (Debian 12) fails reusing a prior-knowledge connection (curl/curl#10634).
    result = run(curl, "-sS", "--http2-prior-knowledge", "-w", "\\n%{http_version}", f"{url}/hello.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, world\n\n2"
    home = run(curl, "-sS", "--http2-prior-knowledge", f"{url}/")
    assert b"<h1>home</h1>" in home.stdout
    big = run(curl, "-sS", "--http2-prior-knowledge", f"{url}/big.bin")
    assert big.stdout == BIG


def test_curl_h2_by_alpn_and_http11_still_offered(h2web):
    curl = require_tool("curl")
    url, ca = h2web["tls"], h2web["ca"]
    result = run(curl, "-sS", "--http2", "--cacert", ca, "-w", "%{http_version} %{num_connects}\\n",
                 f"{url}/big.bin", f"{url}/hello.txt")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == BIG + b"2 1\nhello, world\n2 0\n"  # one connection, both over HTTP/2
    older = run(curl, "-sS", "--http1.1", "--cacert", ca, "-w", "%{http_version}", f"{url}/hello.txt")
    assert older.stdout == b"hello, world\n1.1"


def test_curl_ranges_and_conditionals_over_h2(h2web):
    curl = require_tool("curl")
    url = h2web["plain"]
    ranged = run(curl, "-sS", "--http2-prior-knowledge", "-r", "100-199", f"{url}/big.bin")
    assert ranged.stdout == BIG[100:200]
    head = run(curl, "-sSI", "--http2-prior-knowledge", f"{url}/hello.txt").stdout.decode()
    etag = [line.split(": ", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("etag")][0]
    cond = run(curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H",
               f"If-None-Match: {etag}", f"{url}/hello.txt")  # fmt: skip
    assert cond.stdout == b"304"


def test_nghttp_several_streams(h2web):
    nghttp = require_tool("nghttp")
    url = h2web["plain"]
    result = run(nghttp, "-nv", f"{url}/hello.txt", f"{url}/big.bin", f"{url}/index.html", f"{url}/nope")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.count(":status: 200") == 3 and text.count(":status: 404") == 1, text[-2000:]
    assert text.count("send HEADERS frame") == 4 and "send GOAWAY" in text  # four streams, one connection
    tls = run(nghttp, "-v", f"{h2web['tls']}/hello.txt")
    assert tls.returncode == 0 and b"h2 (ALPN)" in tls.stdout or b"negotiated protocol: h2" in tls.stdout, tls


def test_h2load(h2web):
    h2load = require_tool("h2load")
    for url in (h2web["plain"], h2web["tls"]):
        result = run(h2load, "-n", "300", "-c", "3", "-m", "10", f"{url}/hello.txt", timeout=60)
        out = result.stdout.decode()
        assert "300 succeeded, 0 failed, 0 errored" in out, out
        # 1 GiB windows (h2load's default), three 1 MiB files at once on one connection: more than one burst, so
        # the server goes on only when the engine says the last burst has gone (WHEN_DRAINED), under every model.
        big = run(h2load, "-n", "6", "-c", "1", "-m", "3", f"{url}/big.bin", timeout=60)
        out = big.stdout.decode()
        assert "6 succeeded, 0 failed, 0 errored" in out and "(6291456) data" in out, out


def test_httpx_http2(h2web):
    httpx = pytest.importorskip("httpx")
    context = ssl.create_default_context(cafile=h2web["ca"])
    with httpx.Client(http2=True, verify=context) as client:
        responses = [client.get(f"{h2web['tls']}/{name}") for name in ("hello.txt", "big.bin", "docs/", "nope")]
    assert [r.http_version for r in responses] == ["HTTP/2"] * 4
    assert [r.status_code for r in responses] == [200, 200, 200, 404]
    assert responses[0].text == "hello, world\n" and responses[1].content == BIG


def test_rapid_reset_is_cut_off_and_others_are_served(h2web):
    curl = require_tool("curl")
    host, port = h2web["address"]
    attacker = Wire(host, port)
    try:
        attacker.send(PREFACE + settings())
        flood = b"".join(headers_frame(attacker.encoder, 1 + 2 * i) + rst(1 + 2 * i) for i in range(600))
        try:
            attacker.send(flood)
        except OSError:
            pass  # the server may close before it has read it all
        answers = attacker.read_until(lambda a: a.goaway is not None)
        assert answers.goaway is not None and answers.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        attacker.close()
    served = run(curl, "-sS", "--http2-prior-knowledge", f"{h2web['plain']}/hello.txt")
    assert served.stdout == b"hello, world\n"


def test_a_shut_window_is_cut_off_however_the_client_pings(h2web):
    """The client keeps its window at zero and pings every 0.3 s: not idle, but the stall deadline (2 s) ends it."""
    host, port = h2web["address"]
    wire = Wire(host, port)
    try:
        wire.send(PREFACE + settings(initial_window_size=0) + headers_frame(wire.encoder, 1, "/big.bin"))
        started = time.monotonic()
        while time.monotonic() - started < 8:
            wire.send(ping())
            answers = wire.read_until(lambda a: a.closed, timeout=0.3)
            if answers.closed:
                break
        assert wire.answers.closed, "the connection outlived its stall deadline"
        assert 1.5 < time.monotonic() - started < 6
        assert wire.answers.goaway is not None
    finally:
        wire.close()


def test_graceful_stop_sends_goaway_and_finishes_streams(site, pki):
    """SIGTERM while a stream waits on the window: GOAWAY names it, and it still completes within the grace."""
    for model in MODELS:
        server = https_web(site, model, pki["good"], "--grace", "5")
        try:
            wire = Wire(*server.address("web", "tcp"))
            wire.send(PREFACE + settings(initial_window_size=0) + headers_frame(wire.encoder, 1, "/big.bin"))
            wire.read_until(lambda a: 1 in a.headers)
            assert wire.answers.headers[1][":status"] == "200", model
            threading.Timer(0, server.proc.send_signal, (signal.SIGTERM,)).start()
            answers = wire.read_until(lambda a: a.goaway is not None)
            assert answers.goaway is not None and answers.goaway.last_stream_id == 1, model
            wire.send(window_update(1, len(BIG)) + window_update(0, len(BIG)))
            answers = wire.read_until(lambda a: 1 in a.ended)
            assert answers.bodies.get(1) == BIG, model
            wire.close()
            assert server.proc.wait(10) == 0
        finally:
            server.stop()
            if server.proc.stderr:
                server.proc.stderr.close()


def test_max_streams_option(site, sockhop_server):
    """--max-streams is what SETTINGS advertises and what REFUSED_STREAM enforces."""
    server = sockhop_server(["serve", "web", str(site), "--listen", "127.0.0.1:0", "--no-access-log",
                             "--max-streams", "3"])  # fmt: skip
    wire = Wire(*server.address("web"))
    try:
        wire.send(PREFACE + settings(initial_window_size=0))
        wire.send(b"".join(headers_frame(wire.encoder, sid, "/big.bin") for sid in (1, 3, 5, 7)))
        answers = wire.read_until(lambda a: 7 in a.resets())
        assert answers.resets(7) == [7] and [sid for sid in (1, 3, 5) if sid in answers.headers] == [1, 3, 5]
        first = answers.frames[0]
        assert first.settings[first.MAX_CONCURRENT_STREAMS] == 3
    finally:
        wire.close()


def test_ping_over_tls_by_alpn(h2web):
    """A raw HTTP/2 client over TLS that offers only h2: the server picks it."""
    host, port = h2web["tls"].removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=h2web["ca"])
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(PREFACE + settings() + ping(b"sockhop!"))
        data = b""
        while b"sockhop!" not in data:
            chunk = sock.recv(65536)
            assert chunk, "closed before the PING was answered"
            data += chunk
    ack = data.index(b"sockhop!")
    assert data[ack - 9 + 3 : ack - 9 + 5] == bytes([6, 1])  # a PING frame with the ACK flag
