"""What happens when no bytes arrive, under every model: a stream written to later when another thread wakes it,
timers, a TCP forwarder (client <-> upstream through the engine, with backpressure and aborts), a UDP query with
a timeout, and a background job. The server is tests/engine/wakeful.py, a real subprocess; upstreams are real
loopback sockets run by the test."""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

import pytest

from tests.engine.clients import connect, wait_for
from tests.support import start_server
from tests.tls_certs import LocalCA

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
MiB = 1024 * 1024


@pytest.fixture(params=MODELS)
def model(request):
    return request.param


class Upstream:
    """A loopback TCP server run by the test: each connection is handed to ``handler`` on a thread of its own (or,
    ``one_at_a_time``, in the order they came)."""

    one_at_a_time = False

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.handler: Callable[[socket.socket], None] = lambda conn: None
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return "{}:{}".format(*self.sock.getsockname())

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.one_at_a_time:
                self._run(conn)
            else:
                threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except BaseException as exc:  # reported by the test, never lost in a thread
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


class Collector(Upstream):
    """A loopback TCP server that keeps the first line of every connection (the background job's reports)."""

    one_at_a_time = True

    def __init__(self) -> None:
        self.lines: list[str] = []
        super().__init__()
        self.handler = self._collect

    def _collect(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            more = conn.recv(100)
            if not more:
                break
            data += more
        self.lines.append(data.decode().strip())


class Answerer:
    """A loopback UDP server: answers each datagram upper-cased, except ``silent`` ones."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return "{}:{}".format(*self.sock.getsockname())

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            if b"silent" not in data:
                self.sock.sendto(data.upper(), peer)


@pytest.fixture
def world(model):
    """The server under ``model`` with its upstream, UDP answerer and job collector; all stopped after the test."""
    upstream, answerer, collector = Upstream(), Answerer(), Collector()
    proc = start_server(
        [
            "--model", model,
            "--upstream", upstream.address,
            "--udp-upstream", answerer.address,
            "--job-target", collector.address,
        ],
        module="tests.engine.wakeful",
        announce=5,
    )  # fmt: skip
    proc.upstream, proc.collector = upstream, collector
    yield proc
    status = proc.stop()
    upstream.close()
    answerer.sock.close()
    collector.sock.close()
    assert status == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()
    assert not upstream.errors, upstream.errors


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


# -- a response written to later ---------------------------------------------------------------------------------------
def test_a_stream_is_written_to_when_another_thread_wakes_it(world):
    started = time.monotonic()
    with connect(world.address("stream")) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\n\r\n")
        head = sock.recv(1000)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - started < 0.09, "the head comes at once; the events later"
        rest = read_all(sock)
    events = (head + rest).split(b"\r\n\r\n", 1)[1]
    assert events == b"data: event 1\n\ndata: event 2\n\ndata: event 3\n\n"
    assert time.monotonic() - started >= 0.3  # three wake-ups 0.1 s apart


def test_a_client_gone_before_its_events_costs_only_its_own_stream(world):
    for _ in range(3):
        with connect(world.address("stream")) as gone:
            gone.sendall(b"GET /events HTTP/1.1\r\n\r\n")
            assert gone.recv(1000).startswith(b"HTTP/1.1 200 OK")
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, at once
    with connect(world.address("stream")) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\n\r\n")
        assert read_all(sock).endswith(b"data: event 3\n\n")


def test_timers_call_back_in_order_and_a_cancelled_one_never(world):
    started = time.monotonic()
    with connect(world.address("tick")) as sock:
        said = read_all(sock)
    took = time.monotonic() - started
    assert said == b"ticking\ntick 1\ntick 2\ntock\ntick 3\ntick 4\ntick 5\n"
    assert 0.5 <= took < 3.0


# -- outbound connections: a forwarder ---------------------------------------------------------------------------------
def test_a_forwarder_carries_a_conversation_both_ways_and_passes_the_ends_on(world):
    request = os.urandom(3 * MiB)

    def echo_upper_end(conn: socket.socket) -> None:
        got = read_all(conn)  # to the client's half-close, passed on by the forwarder
        conn.sendall(b"%d:" % len(got) + got[::-1])

    world.upstream.handler = echo_upper_end
    with connect(world.address("forward")) as sock:
        threading.Thread(target=lambda: (sock.sendall(request), sock.shutdown(socket.SHUT_WR)), daemon=True).start()
        answer = read_all(sock)  # a clean end: the upstream's FIN passed on
    assert answer == b"%d:" % len(request) + request[::-1]


@pytest.mark.parametrize("model", ["eventloop", "pool"])
def test_a_forwarder_to_a_unix_socket(model, tmp_path):
    path = str(tmp_path / "upstream.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"unix: " + read_all(conn))

    threading.Thread(target=answer, daemon=True).start()
    proc = start_server(["--model", model, "--upstream-unix", path], module="tests.engine.wakeful", announce=4)
    try:
        with connect(proc.address("forward")) as sock:
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            assert read_all(sock) == b"unix: hello"
    finally:
        listener.close()
        assert proc.stop() == 0, proc.log()


def test_a_slow_reader_holds_the_upstream_back(world):
    """The client reads nothing for a while: the upstream can only fill the sockets' buffers and the engine's
    write_buffer, not push its whole 48 MiB into the server's memory; then everything arrives, intact."""
    total = 48 * MiB
    payload = os.urandom(MiB)
    accepted = {}
    go_on = threading.Event()

    def flood(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        conn.setblocking(False)
        sent = 0
        stalled_since = time.monotonic()
        while sent < total and time.monotonic() - stalled_since < 1.0:
            select.select([], [conn], [], 0.2)
            try:
                n = conn.send(payload[sent % MiB :])
            except BlockingIOError:
                continue
            sent += n
            stalled_since = time.monotonic()
        accepted["while not read"] = sent
        go_on.wait(30)
        conn.setblocking(True)
        while sent < total:
            sent += conn.send(payload[sent % MiB :])

    world.upstream.handler = flood
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    sock.connect(world.address("forward"))
    with sock:
        deadline = time.monotonic() + 30
        while "while not read" not in accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        go_on.set()
        sock.shutdown(socket.SHUT_WR)
        received = read_all(sock)
    assert accepted["while not read"] < 24 * MiB, accepted
    assert len(received) == total
    assert received == payload * 48


def test_an_upstream_that_dies_mid_stream_aborts_the_client(world):
    def die(conn: socket.socket) -> None:
        conn.sendall(b"x" * 200_000)
        time.sleep(0.2)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset

    world.upstream.handler = die
    received = 0
    with connect(world.address("forward")) as sock, pytest.raises(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += len(chunk)
    assert received <= 200_000
    assert wait_for(lambda: "upstream lost" in world.log(), 5), world.log()  # the log is read as it comes


def test_an_upstream_that_cannot_be_reached_is_reported_to_the_protocol(model):
    closed = socket.create_server(("127.0.0.1", 0))
    address = "{}:{}".format(*closed.getsockname())
    closed.close()  # nothing listens there now: refused
    proc = start_server(["--model", model, "--upstream", address], module="tests.engine.wakeful", announce=4)
    try:
        with connect(proc.address("forward")) as sock:
            said = read_all(sock)
        assert said.startswith(b"upstream failed: [Errno 111]"), said
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = LocalCA(tmp_path_factory.mktemp("pki"))
    return {"ca": ca, "localhost": ca.issue("localhost", ["localhost"]), "other": ca.issue("other", ["other.test"])}


@pytest.mark.parametrize("name", ["localhost", "other"])
def test_a_forwarder_to_a_tls_upstream_checks_its_certificate(model, pki, name):
    cert = pki[name]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    upstream = Upstream()

    def answer(conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the forwarder refused our certificate
        line = b""
        while not line.endswith(b"\n"):
            line += tls.recv(100)
        tls.sendall(b"over TLS: " + line)
        tls.close()

    upstream.handler = answer
    proc = start_server(
        ["--model", model, "--upstream", upstream.address, "--tls-ca", str(pki["ca"].pem)],
        module="tests.engine.wakeful",
        announce=5,
    )
    try:
        with connect(proc.address("tls-forward")) as sock:
            sock.sendall(b"hello\n")
            if name == "localhost":
                assert read_all(sock) == b"over TLS: hello\n"
            else:  # a certificate for another name: the upstream is never trusted, the client aborted
                with pytest.raises(ConnectionResetError):
                    read_all(sock)
    finally:
        upstream.close()
        assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()
    assert not upstream.errors, upstream.errors


def test_a_stream_inside_tls_is_woken_through_the_layer(model, pki):
    cert = pki["localhost"]
    proc = start_server(
        ["--model", model, "--tls-cert", str(cert.cert), str(cert.key)], module="tests.engine.wakeful", announce=5
    )
    try:
        context = ssl.create_default_context(cafile=str(pki["ca"].pem))
        with context.wrap_socket(connect(proc.address("tls-stream")), server_hostname="localhost") as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\n\r\n")
            said = b""
            while chunk := sock.recv(1000):
                said += chunk
        assert said.endswith(b"\r\n\r\ndata: event 1\n\ndata: event 2\n\ndata: event 3\n\n"), said
    finally:
        assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()


# -- outbound UDP ------------------------------------------------------------------------------------------------------
def test_a_udp_query_is_answered_or_times_out(world):
    with connect(world.address("query")) as sock:
        sock.sendall(b"silent question\n")
        time.sleep(0.05)
        sock.sendall(b"hello\n")
        first = sock.recv(100)
        started = time.monotonic()
        second = sock.recv(100)
    assert first == b"answer: HELLO\n"
    assert second == b"timeout\n"
    assert time.monotonic() - started < 1.0


# -- background jobs ---------------------------------------------------------------------------------------------------
def test_a_background_job_runs_once_with_timers_and_connections_and_stops_gracefully(world):
    deadline = time.monotonic() + 10
    while len(world.collector.lines) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.stop() == 0, world.log()
    lines = list(world.collector.lines)
    assert lines, world.log()
    assert lines[-1] == f"job {world.pid} stopping", lines  # in the server's (the master's) process, told last
    numbers = [int(line.split()[2]) for line in lines[:-1] if not line.endswith("poked")]
    assert numbers == list(range(1, len(numbers) + 1)), lines  # one job: under prefork too, never one per worker
    assert {line.split()[1] for line in lines} == {str(world.pid)}
    assert wait_for(lambda: "job stopped after" in world.log(), 5), world.log()
    time.sleep(0.3)
    assert world.collector.lines == lines  # nothing after the stop


@pytest.mark.parametrize("model", ["thread", "prefork"])
def test_a_service_declares_its_jobs_and_the_face_runs_them(model):
    collector = Collector()
    proc = start_server(
        ["--model", model, "--listen", "127.0.0.1:0", "--job-target", collector.address, "-v"],
        module="tests.engine.job_echo",
    )
    try:
        assert wait_for(lambda: len(collector.lines) >= 2, 10), proc.log()
    finally:
        assert proc.stop() == 0, proc.log()
    assert wait_for(lambda: collector.lines[-1] == f"job {proc.pid} stopping", 5), collector.lines
    collector.sock.close()


def test_a_connection_wakes_the_background_job_across_processes(world):
    """Under prefork the job runs in the master and the connection in a worker; under fork in the parent and a
    child: the wake crosses over (as a queue runner is woken by the worker that has just spooled a message)."""
    with connect(world.address("poke")) as sock:
        sock.sendall(b"wake up\n")
        assert sock.recv(100) == b"poked\n"
    assert wait_for(lambda: f"job {world.pid} poked" in world.collector.lines, 5), world.collector.lines


def test_timers_of_closed_outbound_connections_do_not_hold_them(monkeypatch):
    """A client protocol sets a long timer (a read timeout) and its connection closes before it is due: the heap
    must not keep the connection, its socket and its protocol until then -- a proxy opening 700 upstream
    connections a second under a 60 s read timeout held 42,000 of them. Counted, not timed."""
    import gc
    import weakref

    from sockhop.engine import reactor as engine
    from sockhop.engine.protocol import NOTHING, ClientProtocol, Close, Reply

    monkeypatch.setattr(engine, "COMPACT_SLACK", 16, raising=False)

    class Brief(ClientProtocol):
        def connection_made(self, peer, local) -> Reply:
            self.handle.call_later(60, lambda: NOTHING)  # never cancelled: the connection ends first
            return Reply(close=Close.AT_ONCE)

    alive: weakref.WeakSet = weakref.WeakSet()
    loop = engine.Reactor()
    with socket.create_server(("127.0.0.1", 0), backlog=512) as listener:
        address = listener.getsockname()[:2]
        for _ in range(200):
            protocol = Brief()
            alive.add(protocol)
            out = engine.Outbound(loop, address, protocol, False, None, None, 10.0)
            deadline = time.monotonic() + 5
            while not out.closed and time.monotonic() < deadline:
                select.select([loop.fileno()], [], [], 0.1)
                loop.run_ready()
            assert out.closed
            listener.accept()[0].close()
        del protocol, out
        gc.collect()
        # 200 connections, each with a 60 s timer and a cancelled connect timer: without compaction 400 entries
        # and all 200 protocols held.
        assert len(loop.timers) <= 2 * 16, len(loop.timers)
        assert len(alive) <= 16, len(alive)
    loop.close()
