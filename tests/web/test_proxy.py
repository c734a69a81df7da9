"""The reverse proxy under every model: curl and wget through `sockhop serve web --proxy` to real upstreams (Python's
http.server over TCP and a Unix socket, tests/web/upstreams.py) -- bodies both ways, keep-alive, the forwarding
headers, round robin past a dead upstream, 502/504, an upstream dying mid-body, hostile bodies."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess

import pytest

from tests.support import read_until_closed, require_tool
from tests.web.conftest import MODELS, curl, start_web, stop_clean
from tests.web.upstreams import pattern


@pytest.fixture(scope="module", params=MODELS)
def proxy(request, upstreams, tmp_path_factory):
    site = tmp_path_factory.mktemp("proxysite")
    (site / "static.txt").write_text("static\n")
    up = f"http://127.0.0.1:{upstreams.port}"
    dead = f"http://127.0.0.1:{upstreams.dead_port}"
    server = start_web(
        site,
        request.param,
        "--proxy", f"/app/={up}/",
        "--proxy", f"/keep={up}",
        "--proxy", f"/dead/={dead}/",
        "--proxy", f"/rr/={dead}/,{up}/",
        "--proxy", f"/rr2/={dead}/,{up}/",
        "--proxy", f"/unix/=unix:{upstreams.unix_path}:/",
        "--proxy", f"/tls/=https://127.0.0.1:{upstreams.port_of('tls')}/",
        "--proxy", f"/wrongtls/=https://127.0.0.1:{upstreams.port_of('wrong')}/",
        "--proxy", f"/ws/=http://127.0.0.1:{upstreams.port_of('ws')}/",
        "--proxy-ca", upstreams.ca,
        "--proxy-read-timeout", "1",
        "--max-body", "64M",
        "--idle-timeout", "5",
        "--grace", "2",
    )  # fmt: skip
    host, port = server.address("web")
    server.base = f"http://{host}:{port}"
    server.hostport = (host, port)
    yield server
    stop_clean(server)


def test_a_get_goes_to_the_upstream_and_static_files_stay_static(proxy):
    result = curl("-i", proxy.base + "/app/hello", proxy.base + "/static.txt")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 200 OK" in out and b"upstream hello\n" in out and b"static\n" in out
    assert b"\r\nVia: 1.1 sockhop\r\n" in out


def test_the_upstream_sees_the_forwarding_headers_and_no_hop_by_hop_ones(proxy):
    result = curl("-H", "Connection: keep-alive, X-Secret", "-H", "X-Secret: 1", "-H", "Keep-Alive: 5",
                  "-H", "X-Forwarded-For: 192.0.2.7", proxy.base + "/app/headers?q=1")  # fmt: skip
    head = json.loads(result.stdout)
    headers = {k.lower(): v for k, v in head["headers"]}
    assert head["path"] == "/headers?q=1"
    assert headers["x-forwarded-for"] == "192.0.2.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"{proxy.hostport[0]}:{proxy.hostport[1]}"
    assert headers["forwarded"] == f'for=127.0.0.1;proto=http;host="{proxy.hostport[0]}:{proxy.hostport[1]}"'
    assert headers["via"] == "1.1 sockhop"
    assert "x-secret" not in headers and "keep-alive" not in headers
    assert headers["host"].startswith("127.0.0.1:")


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One answer with a Content-Length off a keep-alive connection: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, head
        body += piece
    return head, body


def test_a_request_sent_again_byte_for_byte_is_proxied_the_same(proxy):
    # The second and later copies are proxied from what parsing the first decided (ProxyServer._proxy_again): the
    # upstream sees the same head each time, round robin still turns, and a different request in between is parsed.
    again = b"GET /app/headers?q=2 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.7\r\nX-Secret: 1\r\n\r\n"
    robin = b"GET /rr/hello HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(proxy.hostport, timeout=10) as sock:
        seen = []
        for request in (again, again, robin, robin, robin, again, b"HEAD /app/hello HTTP/1.1\r\nHost: x\r\n\r\n"):
            sock.sendall(request)
            head, body = read_answer(sock) if not request.startswith(b"HEAD") else (read_until(sock, b"\r\n\r\n"), b"")
            if request.startswith(b"HEAD"):
                assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 15" in head, head
                continue
            assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nVia: 1.1 sockhop" in head, head
            seen.append(body)
    assert seen[0] == seen[1] == seen[5], seen
    first = json.loads(seen[0])
    headers = {k.lower(): v for k, v in first["headers"]}
    assert first["path"] == "/headers?q=2"
    assert headers["x-forwarded-for"] == "192.0.2.7, 127.0.0.1" and headers["x-secret"] == "1"
    assert headers["forwarded"] == 'for=127.0.0.1;proto=http;host="x"' and headers["via"] == "1.1 sockhop"
    assert seen[2] == seen[3] == seen[4] == b"upstream hello\n"


def test_without_a_path_in_the_url_the_request_path_goes_on_unchanged(proxy):
    # /keep=http://up (no path): /keep... is sent as it is, and the upstream has no such path
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.base + "/keep").stdout == b"404"


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_an_upload_streams_to_the_upstream(proxy, tmp_path, chunked):
    body = pattern(3 * 1024 * 1024 + 17)
    (tmp_path / "up.bin").write_bytes(body)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    result = curl("--data-binary", f"@{tmp_path / 'up.bin'}", *extra, proxy.base + "/app/upload")
    assert json.loads(result.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_downloads_keep_alive_and_chunked_answers(proxy):
    result = curl("-v", proxy.base + "/app/blob/2000000", proxy.base + "/app/chunked", proxy.base + "/app/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == pattern(2000000) + b"one two three\n" + b"upstream hello\n"
    assert result.stderr.count(b"Connected to") == 1  # one connection for all three


def test_a_head_is_answered_without_a_body(proxy):
    result = curl("-I", proxy.base + "/app/blob/5000", proxy.base + "/app/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"HTTP/1.1 200 OK") == 2 and b"Content-Length: 5000" in result.stdout


def test_wget_through_the_proxy(proxy, tmp_path):
    wget = require_tool("wget")
    out = tmp_path / "blob"
    subprocess.run([wget, "-q", "-O", str(out), proxy.base + "/app/blob/300000"], check=True, timeout=30)
    assert out.read_bytes() == pattern(300000)


def test_a_unix_socket_upstream(proxy):
    assert curl(proxy.base + "/unix/hello").stdout == b"upstream hello\n"


def test_a_dead_upstream_is_502_and_the_next_in_turn_is_tried(proxy):
    result = curl("-i", proxy.base + "/dead/hello")
    assert result.stdout.startswith(b"HTTP/1.1 502 Bad Gateway"), result.stdout[:200]
    for _ in range(3):  # whichever comes first in turn, the dead one is skipped
        assert curl(proxy.base + "/rr/hello").stdout == b"upstream hello\n"


def test_a_slow_upstream_is_504(proxy):
    result = curl("-i", proxy.base + "/app/slow")
    assert result.stdout.startswith(b"HTTP/1.1 504 Gateway Timeout"), result.stdout[:200]


def test_an_upstream_dying_mid_body_aborts_the_client(proxy):
    result = curl("-o", "/dev/null", proxy.base + "/app/die")
    assert result.returncode in (18, 56), result  # partial file, or a reset: never a whole answer
    assert curl(proxy.base + "/app/hello").stdout == b"upstream hello\n"  # and the server goes on


HOSTILE = {
    "chunk-size-overflow": (
        b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        400,
    ),
    "chunk-longer-than-its-size": (
        b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
        400,
    ),
    "length-lies-short": (b"GET /app/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabcdefghij\r\n\r\n", 400),
    "body-after-get": (b"GET /app/hello HTTP/1.1\r\nHost: x\r\n\r\nname=value&other=1\r\n\r\n", 400),
    "cl-and-te": (
        b"POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "over-max-body": (b"PUT /app/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 99000000\r\n\r\nabc", 413),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_to_a_proxied_path_are_refused(proxy, case):
    data, status = HOSTILE[case]
    with socket.create_connection(proxy.hostport, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        raw = read_until_closed(sock, 10)
    last = raw[raw.rfind(b"HTTP/1.1 ") :]
    assert int(last.split(b" ", 2)[1]) == status, raw[:300]
    assert curl(proxy.base + "/app/hello").stdout == b"upstream hello\n"


def test_a_pipelined_static_request_waits_for_the_proxied_one(proxy):
    with socket.create_connection(proxy.hostport, timeout=10) as sock:
        sock.sendall(
            b"GET /app/chunked HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /static.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        raw = read_until_closed(sock, 10)
    assert raw.index(b"three\n") < raw.index(b"static\n"), raw


def test_a_tls_upstream_is_verified(proxy):
    assert curl(proxy.base + "/tls/hello").stdout == b"upstream hello\n"
    # a certificate for another name: never trusted, 502
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.base + "/wrongtls/hello").stdout == b"502"


def test_a_websocket_is_tunnelled(proxy):
    from websockets.sync.client import connect

    with connect(f"ws://{proxy.hostport[0]}:{proxy.hostport[1]}/ws/", open_timeout=10) as ws:
        for word in ("hello", "tunnel", "y" * 300000):
            ws.send(word)
            assert ws.recv(timeout=10) == word.upper()


def test_a_host_table_in_sockhop_toml_proxies(upstreams, tmp_path):
    from sockhop import config

    (tmp_path / "a").mkdir()
    dead = f"http://127.0.0.1:{upstreams.dead_port}"
    (tmp_path / "sockhop.toml").write_text(
        f"""[services.web]
listen = "127.0.0.1:0"
no-access-log = true

[services.web.hosts."a.test"]
root = "{tmp_path / "a"}"
proxy = ["/api/={dead}/|http://127.0.0.1:{upstreams.port}/", "/u/=unix:{upstreams.unix_path}:/"]
"""
    )
    configs, mistakes = config.load(tmp_path / "sockhop.toml")
    assert mistakes == []
    argv = configs[0].argv
    server = start_web(tmp_path / "a", "eventloop", *argv[argv.index("--listen") :])
    try:
        host, port = server.address("web")
        for path in ("/api/hello", "/api/hello", "/u/hello"):
            result = curl("-H", "Host: a.test", f"http://{host}:{port}{path}")
            assert result.stdout == b"upstream hello\n", result
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"http://{host}:{port}/api/hello").stdout == b"404"
    finally:
        server.stop()


def test_an_http_1_0_client_gets_a_chunked_answer_as_the_connection_s_end(proxy):
    result = curl("-0", "-i", proxy.base + "/app/chunked", proxy.base + "/app/hello")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split(b"HTTP/1.1 200 OK")[1:]
    assert b"chunked" not in first.lower() and b"Connection: close" in first and first.endswith(b"one two three\n")
    assert second.endswith(b"upstream hello\n")


def test_an_upload_to_a_dead_upstream_goes_to_the_next_in_turn(proxy, tmp_path):
    body = pattern(200000)
    (tmp_path / "b").write_bytes(body)
    for _ in range(2):  # one of the two starts with the dead upstream: nothing reached it, so the next gets it all
        result = curl("--data-binary", f"@{tmp_path / 'b'}", proxy.base + "/rr2/upload")
        assert json.loads(result.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_proxied_requests_are_in_the_access_log(upstreams, tmp_path):
    import time

    log = tmp_path / "access.log"
    server = start_web(tmp_path, "eventloop", "--access-log", str(log), "--proxy",
                       f"/app/=http://127.0.0.1:{upstreams.port}/,http://127.0.0.1:{upstreams.dead_port}/")  # fmt: skip
    try:
        host, port = server.address("web")
        for path in ("/app/hello", "/app/hello", "/app/missing"):
            curl(f"http://{host}:{port}{path}")
        deadline = time.monotonic() + 5
        while log.read_text().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    text = log.read_text()
    assert text.count('"GET /app/hello HTTP/1.1" 200 15 "-" "curl/') == 2, text
    assert '"GET /app/missing HTTP/1.1" 404 9 ' in text, text


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_a_graceful_stop_lets_a_proxied_answer_finish(upstreams, tmp_path, model):
    import signal
    import time

    server = start_web(tmp_path, model, "--grace", "5", "--proxy", f"/app/=http://127.0.0.1:{upstreams.port}/")
    try:
        host, port = server.address("web")
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"GET /app/chunked HTTP/1.1\r\nHost: x\r\n\r\n")  # three chunks, 50 ms apart
            time.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            raw = read_until_closed(sock, 10)  # the answer, whole, then the server closes -- not at the grace's end
            took = time.monotonic() - asked
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"0\r\n\r\n"), raw
        assert took < 3, took
        assert server.proc.wait(10) == 0
    finally:
        server.stop()


def test_upstream_connections_that_end_are_not_kept(tmp_path):
    """Requests one after another on one keep-alive connection, each answered by an upstream that closes after its
    answer (as one the pool has no room for is closed): every upstream connection ends, and nothing of it -- its read
    timeout in the engine's heap, the loop's wake-up for that timer -- may outlive it. Counted, not timed."""
    import gc
    import threading

    from sockhop.engine import Limits, Listener
    from sockhop.engine.eventloop import EventLoopServer
    from sockhop.web.files import Site, SiteOptions
    from sockhop.web.protocol import HttpLimits, WebOptions
    from sockhop.web.proxy import ProxyOptions, UpstreamConn, make_proxy_factory
    from sockhop.web.upstream import make_routes

    upstream = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(4096)
                    if not piece:
                        break
                    data += piece
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nup\n")

    threading.Thread(target=answer, daemon=True).start()
    routes = make_routes([("/", [f"http://127.0.0.1:{upstream.getsockname()[1]}"])])
    options = WebOptions(Site(SiteOptions(root=tmp_path, proxy=routes)), HttpLimits(), None)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    factory = make_proxy_factory(options, ProxyOptions(read_timeout=60))
    server = EventLoopServer([Listener(listener, factory, name="web")], Limits(idle_timeout=60, grace=2))
    loop = threading.Thread(target=server.run)
    loop.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            for _ in range(200):
                client.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                assert read_until(client, b"up\n").startswith(b"HTTP/1.1 200")
            gc.collect()
            held = sum(isinstance(o, UpstreamConn) for o in gc.get_objects())
            assert server.reactor is not None
            # Without the fix: all 200 held by their 60 s read timeouts, 400 reactor timers, 400 wake-up entries.
            assert held <= 2, held
            assert sum(not entry[2].stale for entry in server.reactor.timers) <= 2, server.reactor.timers
            assert len(server.timers) <= 2 * len(server.conns) + 4, len(server.timers)
    finally:
        server.stop()
        loop.join(30)
        upstream.close()


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    return data
