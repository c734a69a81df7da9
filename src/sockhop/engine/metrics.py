"""Engine-level metrics in Prometheus' text format, with the official prometheus_client library, and the admin
listener that serves them (``--admin ENDPOINT``: ``/metrics`` and ``/healthz``).

The counting is one more sans-IO layer, outermost, so every model and every service is counted the same way:
connections opened, open now and refused at the limit, bytes in and out (what crosses the socket, TLS included),
datagrams. What only
the service knows -- requests by status, queries by rcode, messages by result -- the protocol reports itself
through the ``on_result`` hook this layer sets on it (see :class:`sockhop.engine.protocol.Results`); with
--admin off nothing sets it, and the protocol skips the call.

Several processes serve under prefork and fork, so the counts live in prometheus_client's multiprocess mode: each
process writes its own memory-mapped file in a private folder (``PROMETHEUS_MULTIPROC_DIR``, made when --admin is
given and removed at exit), and the admin listener in the master adds them up when scraped. Under ``--model fork``
every connection's child leaves a small file there: prefer prefork or eventloop when you scrape.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sockhop.engine.protocol import (
    Address,
    DatagramProtocol,
    FileRegion,
    Reply,
    Results,
    StreamProtocol,
    as_reply,
    then_mapped,
)

log = logging.getLogger("sockhop.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNER_ENV = "SOCKHOP_METRICS_OWNER"  # the pid of the master that made the folder (and removes it at exit)
LABELS = ("service", "model")


class Metrics:
    """The engine's counters; one per process tree (``Metrics.get``)."""

    _instance: Metrics | None = None

    def __init__(self) -> None:
        # A folder of our own unless the user named one -- or the one named is a predecessor's, handed down by a
        # zero-downtime restart: that master removes it when it has drained, under our workers' feet.
        made_by = os.environ.get(OWNER_ENV)
        if not os.environ.get(MULTIPROC_ENV) or made_by not in (None, str(os.getpid())):
            folder = tempfile.mkdtemp(prefix="sockhop-metrics-")
            os.environ[MULTIPROC_ENV] = folder
            owner = os.getpid()
            os.environ[OWNER_ENV] = str(owner)
            atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        self.folder = os.environ[MULTIPROC_ENV]
        # Imported only now: prometheus_client picks its multiprocess storage at import time.
        from prometheus_client import Counter, Gauge

        self.connections = Counter("sockhop_connections", "Connections accepted", LABELS)
        self.open = Gauge("sockhop_connections_open", "Connections open now", LABELS, multiprocess_mode="livesum")
        self.received = Counter("sockhop_received_bytes", "Bytes received from clients", LABELS)
        self.sent = Counter("sockhop_sent_bytes", "Bytes sent to clients", LABELS)
        self.datagrams_in = Counter("sockhop_datagrams_received", "Datagrams received", LABELS)
        self.datagrams_out = Counter("sockhop_datagrams_sent", "Datagrams sent", LABELS)
        self.refused = Counter(
            "sockhop_connections_refused", "Connections refused at the connection limit (given the busy reply)", LABELS
        )
        self.results: dict[str, object] = {}  # the protocols' own counters, by name, made when first needed
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> Metrics:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def exposition(self) -> bytes:
        """Every process's counts added up, in the text format."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.folder)
        return generate_latest(registry)

    def metered(self, factory: Callable, service: str, model: str, stream: bool = True) -> Callable:
        """Wrap a protocol factory so what it serves is counted under these labels."""
        labels = (service or "?", model)
        counting = ResultCounting(self, labels)
        if stream:
            return lambda: MeteredStream(counting.attach(factory()), self, labels)
        return lambda: MeteredDatagram(counting.attach(factory()), self, labels)

    def refusals(self, service: str, model: str) -> Callable[[], None]:
        """What a listener calls for each client it refuses at the connection limit (``Listener.refused``)."""
        return self.refused.labels(service or "?", model).inc

    def counter(self, results: Results):
        """The counter a protocol's ``results`` names (one per name and process, whichever thread asks first)."""
        with self.lock:
            counter = self.results.get(results.name)
            if counter is None:
                from prometheus_client import Counter

                counter = Counter(results.name, results.documentation, (*LABELS, *results.labels))
                self.results[results.name] = counter
            return counter


class ResultCounting:
    """Sets ``on_result`` on the protocols one listener makes, counting under that listener's labels."""

    def __init__(self, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.metrics = metrics
        self.labels = labels
        self.hooks: dict[str, Callable[..., None]] = {}  # by counter name

    def attach(self, protocol):
        core = protocol
        while (inner := getattr(core, "inner", None)) is not None:  # under the TLS and PROXY layers
            core = inner
        results = core.results
        if results is not None:
            hook = self.hooks.get(results.name)
            if hook is None:
                hook = self.hooks[results.name] = self._hook(results)
            core.on_result = hook
        return protocol

    def _hook(self, results: Results) -> Callable[..., None]:
        counter = self.metrics.counter(results)
        labels = self.labels
        children: dict[tuple[str, ...], object] = {}  # labels() takes a lock and builds a key: once per value

        def on_result(*values: str) -> None:
            child = children.get(values)
            if child is None:
                child = children[values] = counter.labels(*labels, *values)
            child.inc()

        return on_result


def _size(piece: object) -> int:
    if isinstance(piece, FileRegion):
        return piece.count
    return len(piece) if isinstance(piece, bytes | bytearray | memoryview) else 0  # markers such as START_TLS


class MeteredStream(StreamProtocol):
    """Counts a connection and its bytes, passing everything through unchanged."""

    def __init__(self, inner: StreamProtocol, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.inner = inner
        self.received = metrics.received.labels(*labels)
        self.sent = metrics.sent.labels(*labels)
        self.open = metrics.open.labels(*labels)
        metrics.connections.labels(*labels).inc()
        self.open.inc()
        self.closed = False

    def _out(self, reply: Reply) -> Reply:
        if reply.send:
            self.sent.inc(sum(_size(p) for p in reply.send))
        if reply.then is not None:
            return reply._replace(then=then_mapped(reply.then, self._out))
        return reply

    def connection_made(self, peer: Address, local: Address) -> Reply:
        return self._out(self.inner.connection_made(peer, local))

    def data_received(self, data: bytes) -> Reply:
        self.received.inc(len(data))
        return self._out(as_reply(self.inner.data_received(data)))

    def eof_received(self) -> Reply:
        return self._out(self.inner.eof_received())

    def stop_requested(self) -> Reply:
        return self._out(self.inner.stop_requested())

    def timed_out(self) -> Reply:
        return self._out(self.inner.timed_out())

    def output_drained(self) -> Reply:
        return self._out(self.inner.output_drained())

    def connection_lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.open.dec()
        self.inner.connection_lost()

    @property
    def wakeable(self) -> bool:  # type: ignore[override]
        return self.inner.wakeable

    def attach(self, handle) -> None:
        self.inner.attach(handle.mapped(self._out, self.inner))


class MeteredDatagram(DatagramProtocol):
    def __init__(self, inner: DatagramProtocol, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.inner = inner
        self.count_in = metrics.datagrams_in.labels(*labels)
        self.count_out = metrics.datagrams_out.labels(*labels)
        self.received = metrics.received.labels(*labels)
        self.sent = metrics.sent.labels(*labels)

    def tick(self, now: float) -> None:
        self.inner.tick(now)

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        self.count_in.inc()
        self.received.inc(len(data))
        replies = self.inner.datagram_received(data, peer)
        if replies:
            self.count_out.inc(len(replies))
            self.sent.inc(sum(len(r) for r in replies))
        return replies


class AdminServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` on their own listener, served by a thread of the
    master. The socket is bound with the others (before any privilege drop); the thread starts once serving."""

    def __init__(self, sock: socket.socket, metrics: Metrics) -> None:
        self.sock = sock
        self.metrics = metrics
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                if self.path.split("?")[0] == "/metrics":
                    from prometheus_client import CONTENT_TYPE_LATEST

                    self._answer(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] == "/healthz":
                    self._answer(200, b"ok\n", "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                log.debug("admin: " + format, *args)

        httpd = ThreadingHTTPServer(self.sock.getsockname()[:2], Handler, bind_and_activate=False)
        httpd.socket.close()
        httpd.socket = self.sock
        httpd.daemon_threads = True
        self.httpd = httpd
        # The thread must not take the main loop's signals (a signal it took would not wake the loop's poll).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            threading.Thread(target=httpd.serve_forever, name="sockhop-admin", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
