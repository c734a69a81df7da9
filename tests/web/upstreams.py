"""Upstreams the proxy tests send requests to: Python's http.server, in this process, on loopback (TCP and a Unix
socket), with a few paths that misbehave on purpose.

* ``/hello`` -- a small answer; ``/headers`` -- the request's head as JSON (what the proxy added and dropped);
* ``POST /upload`` -- reads the body (Content-Length or chunked) and answers its length and SHA-256;
* ``/blob/N`` -- N bytes of a known pattern, with Content-Length; ``/chunked`` -- three chunks, no length;
  ``/trailers`` -- a chunked body and a trailer field;
* ``/stream/N?ID`` -- N bytes, 64 KiB a write, counted in ``WRITTEN[ID]`` (to see an upstream held back);
* ``/slow`` -- answers after 3 s (past a 1 s read timeout); ``/die`` -- promises 1 MB, sends 10 KB and resets.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import socketserver
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.tls_certs import LocalCA

#: What /stream/N?ID has written so far, by ID; the IDs whose client (the proxy) closed before the end.
WRITTEN: dict[str, int] = {}
CLOSED: set[str] = set()


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet, and a Unix socket's peer has no address to print
        pass

    def _answer(self, body: bytes, status: int = 200, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self):
        digest = hashlib.sha256()
        size = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = n
                while left:
                    data = self.rfile.read(min(left, 1 << 16))
                    digest.update(data)
                    size += len(data)
                    left -= len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", 0))
            while left:
                data = self.rfile.read(min(left, 1 << 16))
                if not data:
                    break
                digest.update(data)
                size += len(data)
                left -= len(data)
        return size, digest.hexdigest()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path
        if path == "/hello":
            self._answer(b"upstream hello\n")
        elif path.startswith("/headers"):
            head = {"path": path, "headers": [[k, v] for k, v in self.headers.items()]}
            self._answer(json.dumps(head).encode(), kind="application/json")
        elif path.startswith("/blob/"):
            self._answer(pattern(int(path[6:])), kind="application/octet-stream")
        elif path.startswith("/stream/"):  # /stream/N?ID: N bytes 64 KiB a write, the count so far in WRITTEN[ID]
            size, _, key = path[8:].partition("?")
            total = int(size)
            self.send_response(200)
            self.send_header("Content-Length", size)
            self.end_headers()
            WRITTEN[key] = 0
            block = pattern(65536)
            try:
                while WRITTEN[key] < total:
                    piece = block[: total - WRITTEN[key]]
                    self.wfile.write(piece)
                    WRITTEN[key] += len(piece)
            except OSError:
                CLOSED.add(key)
        elif path == "/trailers":  # a chunked body with a trailer field after it
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            self.wfile.write(b"5\r\nsum: \r\n3\r\n42\n\r\n0\r\nX-Checksum: 42\r\n\r\n")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one ", b"two ", b"three\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            time.sleep(3)
            self._answer(b"too late\n")
        elif path == "/die":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 10000)
            self.wfile.flush()
            time.sleep(0.1)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        else:
            self._answer(b"not here\n", 404)

    def do_POST(self) -> None:
        size, digest = self._body()
        self._answer(json.dumps({"size": size, "sha256": digest}).encode(), kind="application/json")

    do_PUT = do_POST


class _Quiet:
    def handle_error(self, request, client_address) -> None:  # a client the proxy dropped on purpose (/slow)
        pass


class _TCPServer(_Quiet, ThreadingHTTPServer):
    daemon_threads = True


class _UnixServer(_Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


def _tls_server(cert) -> ThreadingHTTPServer:
    server = _TCPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def _shout(ws) -> None:
    for message in ws:
        ws.send(message.upper())


class Upstreams:
    """The TCP upstream, the Unix-socket one, TLS ones (a certificate for 127.0.0.1, and one for another name), a
    WebSocket server, and a port where nothing listens; stopped with ``close()``."""

    def __init__(self, folder) -> None:
        from websockets.sync.server import serve

        self.tcp = _TCPServer(("127.0.0.1", 0), Handler)
        self.unix_path = str(folder / "up.sock")
        self.unix = _UnixServer(self.unix_path, Handler)
        ca = LocalCA(folder)
        self.ca = str(ca.pem)
        self.tls = _tls_server(ca.issue("ip", ["127.0.0.1"]))
        self.wrong = _tls_server(ca.issue("other", ["other.test"]))
        self.ws = serve(_shout, "127.0.0.1", 0)
        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))
        self.dead_port = spare.getsockname()[1]
        spare.close()  # nothing listens there now: a refused connection
        self.threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            for server in (self.tcp, self.unix, self.tls, self.wrong)
        ]
        self.threads.append(threading.Thread(target=self.ws.serve_forever, daemon=True))
        for thread in self.threads:
            thread.start()

    @property
    def port(self) -> int:
        return self.tcp.server_address[1]

    def port_of(self, name: str) -> int:
        server = getattr(self, name)
        return server.socket.getsockname()[1]

    def close(self) -> None:
        self.ws.shutdown()
        for server in (self.tcp, self.unix, self.tls, self.wrong):
            server.shutdown()
            server.server_close()
        try:
            os.unlink(self.unix_path)
        except OSError:
            pass
