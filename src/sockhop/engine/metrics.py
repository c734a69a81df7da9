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

Under the one-process models counting is kept off the hot path: a request adds to plain integers
(:class:`Tally`), and :meth:`Metrics.publish` hands what they gained to prometheus_client -- whose every ``inc``
takes a lock and writes the memory-mapped file: three of them a request cost the web server half its rate. The
scrape publishes first (it runs in the same process), and so does a server that has no connection left open (a
master that drains after a SIGUSR2 restart leaves its counts to its successor's scrapes). Under fork and prefork
the process that scrapes is not the one counting, so there every count goes to prometheus_client at once.
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
#: The models whose protocols run on several threads of one process: their tallies take a lock.
THREADED = frozenset({"thread", "pool"})
#: The models that count in processes other than the one that scrapes: no tallies, prometheus_client at once.
SEVERAL_PROCESSES = frozenset({"fork", "prefork"})


class Tally:
    """A count of this process, as a plain integer; ``child`` is the prometheus_client value it is published to."""

    __slots__ = ("n", "published", "child")

    def __init__(self, child) -> None:  # type: ignore[no-untyped-def]
        self.n = 0
        self.published = 0
        self.child = child

    def inc(self, amount: int = 1) -> None:
        self.n += amount

    def dec(self, amount: int = 1) -> None:
        self.n -= amount


class LockedTally(Tally):
    """A tally several threads add to."""

    __slots__ = ("lock",)

    def __init__(self, child) -> None:  # type: ignore[no-untyped-def]
        super().__init__(child)
        self.lock = threading.Lock()

    def inc(self, amount: int = 1) -> None:
        with self.lock:
            self.n += amount

    def dec(self, amount: int = 1) -> None:
        with self.lock:
            self.n -= amount


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
        os.register_at_fork(after_in_child=self._forked)
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
        self.tallies: dict[tuple, Tally] = {}  # by (metric name, labels...)
        self.open_now = 0  # connections open in this process (publish when it falls to none)

    @classmethod
    def get(cls) -> Metrics:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def tally(self, metric, labels: tuple[str, ...], model: str):  # type: ignore[no-untyped-def]
        """What counts ``metric`` under ``labels`` for ``model``: this process's tally (one per metric and labels), or
        prometheus_client's own value under the models of several processes."""
        if model in SEVERAL_PROCESSES:
            return metric.labels(*labels)
        key = (metric._name, *labels)
        with self.lock:
            found = self.tallies.get(key)
            if found is None:
                kind = LockedTally if model in THREADED else Tally
                found = self.tallies[key] = kind(metric.labels(*labels))
            return found

    def publish(self) -> None:
        """Hand what every tally of this process gained since the last time to prometheus_client."""
        with self.lock:
            for found in self.tallies.values():
                gained = found.n - found.published
                if gained:
                    found.child.inc(gained)
                    found.published += gained

    def _forked(self) -> None:
        """In a forked child: what the parent counted before the fork is the parent's to publish."""
        self.lock = threading.Lock()
        self.open_now = 0
        for found in self.tallies.values():
            found.published = found.n
            if isinstance(found, LockedTally):
                found.lock = threading.Lock()

    def exposition(self) -> bytes:
        """Every process's counts added up, in the text format (this process's published first)."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        self.publish()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.folder)
        return generate_latest(registry)

    def metered(self, factory: Callable, service: str, model: str, stream: bool = True) -> Callable:
        """Wrap a protocol factory so what it serves is counted under these labels."""
        labels = (service or "?", model)
        counting = ResultCounting(self, labels, model)
        if stream:
            return lambda: MeteredStream(counting.attach(factory()), self, labels)
        return lambda: MeteredDatagram(counting.attach(factory()), self, labels)

    def results_only(self, factory: Callable, service: str, model: str, stream: bool = True) -> Callable:
        """Wrap a protocol factory so its connections and results are counted, but not its bytes: no layer between
        the engine and the protocol (what the dashboard shows, without --admin, costs nothing per read)."""
        labels = (service or "?", model)
        counting = ResultCounting(self, labels, model)
        if not stream:
            return lambda: counting.attach(factory())
        connections = self.tally(self.connections, labels, model)

        def make():  # type: ignore[no-untyped-def]
            connections.inc()
            return counting.attach(factory())

        return make

    def refusals(self, service: str, model: str) -> Callable[[], None]:
        """What a listener calls for each client it refuses at the connection limit (``Listener.refused``)."""
        return self.tally(self.refused, (service or "?", model), model).inc

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

    def __init__(self, metrics: Metrics, labels: tuple[str, str], model: str = "") -> None:
        self.metrics = metrics
        self.labels = labels
        self.model = model
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
        metrics = self.metrics
        counter = metrics.counter(results)
        labels, model = self.labels, self.model
        tallies: dict[tuple[str, ...], Tally] = {}  # tally() takes a lock and builds a key: once per value

        def on_result(*values: str) -> None:
            found = tallies.get(values)
            if found is None:
                found = tallies[values] = metrics.tally(counter, (*labels, *values), model)
            found.inc()

        return on_result


def _size(piece: object) -> int:
    if isinstance(piece, FileRegion):
        return piece.count
    return len(piece) if isinstance(piece, bytes | bytearray | memoryview) else 0  # markers such as START_TLS


class MeteredStream(StreamProtocol):
    """Counts a connection and its bytes, passing everything through unchanged."""

    def __init__(self, inner: StreamProtocol, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.inner = inner
        self.metrics = metrics
        model = labels[1]
        self.received = metrics.tally(metrics.received, labels, model)
        self.sent = metrics.tally(metrics.sent, labels, model)
        self.open = metrics.tally(metrics.open, labels, model)
        metrics.tally(metrics.connections, labels, model).inc()
        self.open.inc()
        metrics.open_now += 1
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
            metrics = self.metrics
            metrics.open_now -= 1
            if metrics.open_now <= 0:  # nothing open: publish now (a draining master may be about to exit)
                metrics.publish()
        self.inner.connection_lost()

    @property
    def wakeable(self) -> bool:  # type: ignore[override]
        return self.inner.wakeable

    def attach(self, handle) -> None:
        self.inner.attach(handle.mapped(self._out, self.inner))


class MeteredDatagram(DatagramProtocol):
    def __init__(self, inner: DatagramProtocol, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.inner = inner
        self.metrics = metrics
        model = labels[1]
        self.count_in = metrics.tally(metrics.datagrams_in, labels, model)
        self.count_out = metrics.tally(metrics.datagrams_out, labels, model)
        self.received = metrics.tally(metrics.received, labels, model)
        self.sent = metrics.tally(metrics.sent, labels, model)

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
