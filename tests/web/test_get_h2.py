"""`sockhop get` over HTTP/2: h2 offered by ALPN as curl offers it (--http1.1 to refuse), h2c with
--http2-prior-knowledge, several URLs on one host as concurrent streams on one connection, -v and -i saying so."""

from __future__ import annotations

import gzip
import socket
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from tests.web.conftest import BIG
from tests.web.test_client import sockhop_get
from tests.web.test_https import https_web

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.tls_certs import LocalCA

    folder = tmp_path_factory.mktemp("pki")
    ca = LocalCA(folder)
    return {"ca": ca, "good": ca.issue("good", ["localhost", "127.0.0.1"])}


@pytest.fixture(scope="module")
def servers(site, pki):
    server = https_web(site, "eventloop", pki["good"])
    try:
        yield {
            "tls": "https://localhost:{}".format(server.address("web", "tls")[1]),
            "plain": "http://{}:{}".format(*server.address("web", "tcp")),
            "ca": str(pki["ca"].pem),
            "port": server.address("web", "tls")[1],
        }
    finally:
        server.stop()
        server.proc.stderr.close()


def test_h2_by_alpn_and_its_trace(servers):
    url, ca = servers["tls"], servers["ca"]
    resolve = ["--resolve", f"localhost:{servers['port']}:127.0.0.1", "--cacert", ca]
    result = sockhop_get(
        "-v", *resolve, f"{url}/hello.txt", f"{url}/big.bin", "-w", "%{http_version} %{num_connects}\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, world\n2 1\n" + BIG + b"2 0\n"
    err = result.stderr.decode()
    assert "* ALPN: offers h2,http/1.1" in err and "* ALPN: server accepted h2" in err and "* Using HTTP/2" in err
    assert "> GET /hello.txt HTTP/2\r\n" in err and "< HTTP/2 200 \r\n" in err
    older = sockhop_get("-v", "--http1.1", *resolve, f"{url}/hello.txt")
    assert older.stdout == b"hello, world\n"
    assert "* ALPN: offers http/1.1\n" in older.stderr.decode() and "< HTTP/1.1 200 OK" in older.stderr.decode()


def test_h2c_prior_knowledge(servers, tmp_path, site):
    url = servers["plain"]
    head = sockhop_get("--http2-prior-knowledge", "-i", f"{url}/hello.txt")
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(b"HTTP/2 200 \r\nserver: sockhop/") and head.stdout.endswith(
        b"\r\n\r\nhello, world\n"
    )
    ranged = sockhop_get("--http2-prior-knowledge", "-r", "10-19", f"{url}/big.bin")
    assert ranged.stdout == BIG[10:20]
    zipped = sockhop_get("--http2-prior-knowledge", "-o", str(tmp_path / "app.js"), f"{url}/app.js")
    assert zipped.returncode == 0 and (tmp_path / "app.js").read_bytes() == (site / "app.js").read_bytes()
    assert gzip.decompress((site / "app.js.gz").read_bytes()) == (site / "app.js").read_bytes()
    missing = sockhop_get("--http2-prior-knowledge", "-f", f"{url}/nope")
    assert missing.returncode == 22 and "404" in missing.stderr.decode()
    plain = sockhop_get("-i", f"{url}/hello.txt")  # without the option: HTTP/1.1, as curl
    assert plain.stdout.startswith(b"HTTP/1.1 200 OK\r\n")


def test_h2c_to_a_server_that_does_not_speak_it():
    """An HTTP/1.1-only server answers the preface with a 400: one plain line, no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = sockhop_get("--http2-prior-knowledge", f"http://127.0.0.1:{port}/")
        thread.join(5)
    assert result.returncode != 0
    text = result.stderr.decode()
    assert "Traceback" not in text and text.count("\n") == 1 and "HTTP/2" in text, text


def test_several_urls_go_out_as_concurrent_streams():
    """A server that answers nothing until it holds three streams at once: a client asking one URL at a time would
    wait on it forever (the server gives up after 5 s, and the test fails)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_connection()
        conn.sendall(h2conn.data_to_send())
        waiting: list[tuple[int, str]] = []
        try:
            while len(waiting) < 3:
                data = conn.recv(65536)
                if not data:
                    return
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"].decode()
                        waiting.append((event.stream_id, path))
                conn.sendall(h2conn.data_to_send())
            seen.extend(sid for sid, _ in waiting)
            for sid, path in reversed(waiting):  # the last asked is answered first
                body = f"answer to {path}\n".encode()
                h2conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
                h2conn.send_data(sid, body, end_stream=True)
            conn.sendall(h2conn.data_to_send())
            while conn.recv(65536):
                pass
        except (TimeoutError, OSError):
            return
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        result = sockhop_get("--http2-prior-knowledge", f"{url}/a", f"{url}/b", f"{url}/c", timeout=20)
    finally:
        thread.join(10)
        listener.close()
    assert seen == [1, 3, 5]
    assert result.stdout == b"answer to /a\nanswer to /b\nanswer to /c\n", result.stderr  # in the order asked


def test_refused_streams_are_asked_again():
    """A server that refuses every third stream it is asked for (REFUSED_STREAM, as nginx refuses those past its
    limit; every third, not those past two in one read: how the requests are cut into reads depends on the
    machine's load): every URL still comes back, in order, on the one connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    refused = [0]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        config = h2.config.H2Configuration(client_side=False)
        h2conn = h2.connection.H2Connection(config)
        h2conn.initiate_connection()
        conn.sendall(h2conn.data_to_send())
        try:
            asked = 0
            while data := conn.recv(65536):
                events = h2conn.receive_data(data)
                for event in events:
                    if not isinstance(event, h2.events.RequestReceived):
                        continue
                    asked += 1
                    if asked % 3 == 0:
                        h2conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        refused[0] += 1
                    else:
                        body = dict(event.headers)[b":path"] + b"\n"
                        h2conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        h2conn.send_data(event.stream_id, body, end_stream=True)
                conn.sendall(h2conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        urls = [f"http://127.0.0.1:{port}/{n}" for n in range(8)]
        result = sockhop_get("--http2-prior-knowledge", *urls, timeout=20)
    finally:
        thread.join(10)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(f"/{n}\n".encode() for n in range(8))
    assert refused[0] > 0
