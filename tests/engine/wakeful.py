"""The reactor suite's server: protocols that act when no bytes arrive, served by any model through the engine alone.

* ``stream``: after a request line, a thread wakes the connection three times (``handle.wake()``); each
  ``woken()`` writes one Server-Sent Event, the third ends the stream -- a response written to later.
* ``tick``: timers -- ``tick N`` every 0.1 s five times, a ``tock`` at 0.25 s, and a cancelled timer that never
  speaks.
* ``forward``: a TCP forwarder to ``--upstream`` (client <-> upstream through the engine, linked for backpressure);
  an upstream that dies (reset) aborts the client's connection.
* ``query``: each line is sent as one UDP datagram to ``--udp-upstream``; the answer, or ``timeout`` after 0.5 s.
* ``tls-stream`` (with ``--tls-cert``): the stream inside the TLS layer, which passes the handle through.
* ``tls-forward`` (with ``--tls-ca``): the forwarder to an upstream speaking TLS.
* with ``--job-target``: a background job that every 0.1 s connects to it and says ``job PID N``, and on the
  graceful stop says ``job PID stopping`` before it ends; ``poke`` wakes it from a connection (another process
  under prefork and fork), and it says ``job PID poked``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import sys
import threading

from sockhop.console import setup_logging
from sockhop.engine import Limits, Listener, make_server
from sockhop.engine.protocol import CLOSE, NOTHING, ClientProtocol, Close, Job, Reply, StreamProtocol
from sockhop.engine.tls import TLSLayer, server_context

log = logging.getLogger("sockhop")


class EventStream(StreamProtocol):
    wakeable = True

    def __init__(self) -> None:
        self.sent = 0
        self.started = False

    def data_received(self, data: bytes) -> Reply:
        if not self.started:
            self.started = True
            threading.Thread(target=self._produce, daemon=True).start()
            return Reply((b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",))
        return NOTHING

    def _produce(self) -> None:  # another thread: it may only wake the engine
        for _ in range(3):
            threading.Event().wait(0.1)
            self.handle.wake()

    def woken(self) -> Reply:
        self.sent += 1
        return Reply((f"data: event {self.sent}\n\n".encode(),), self.sent == 3)


class Ticker(StreamProtocol):
    wakeable = True

    def __init__(self) -> None:
        self.ticks = 0

    def connection_made(self, peer, local) -> Reply:
        self.handle.call_later(0.1)  # woken()
        self.handle.call_later(0.25, lambda: Reply((b"tock\n",)))
        self.handle.call_later(0.05, lambda: Reply((b"never\n",))).cancel()
        return Reply((b"ticking\n",))

    def woken(self) -> Reply:
        self.ticks += 1
        if self.ticks < 5:
            self.handle.call_later(0.1)
        return Reply((f"tick {self.ticks}\n".encode(),), self.ticks == 5)


class Upstream(ClientProtocol):
    """The forwarder's upstream side: what arrives goes to the client, the upstream's end ends the client's."""

    def __init__(self, client: Forwarder) -> None:
        self.client = client
        self.ended = False

    def connection_made(self, peer, local) -> Reply:
        self.client.handle.link(self.handle)
        return NOTHING

    def data_received(self, data: bytes) -> Reply:
        self.client.handle.send(data)
        return NOTHING

    def eof_received(self) -> Reply:
        self.ended = True
        self.client.handle.close()
        return CLOSE

    def connection_failed(self, error: Exception) -> None:
        self.client.handle.carry_out(Reply((f"upstream failed: {error}\n".encode(),), True))

    def connection_lost(self) -> None:
        if not self.ended and not self.client.handle.closed:
            log.info("upstream lost: %s", self.handle.error)
            self.client.handle.close(Close.RESET)  # never a truncated stream that looks whole


class Forwarder(StreamProtocol):
    wakeable = True
    upstream_address: tuple[str, int] | str = ("127.0.0.1", 9)

    def connection_made(self, peer, local) -> Reply:
        self.up = self.handle.connect(self.upstream_address, Upstream(self), timeout=2.0)
        return NOTHING

    def data_received(self, data: bytes) -> Reply:
        self.up.send(data)
        return NOTHING

    def eof_received(self) -> Reply:
        self.up.close()  # half-close: the upstream answers on
        return Reply()  # the engine closes once everything is sent

    def connection_lost(self) -> None:
        if not self.up.closed:
            self.up.close(Close.AT_ONCE)


class TLSForwarder(Forwarder):
    """The same forwarder to an upstream speaking TLS, its certificate checked for "localhost"."""

    context: ssl.SSLContext | None = None

    def connection_made(self, peer, local) -> Reply:
        self.up = self.handle.connect(
            self.upstream_address, Upstream(self), tls=self.context, server_hostname="localhost", timeout=2.0
        )
        return NOTHING


class Answer(ClientProtocol):
    def __init__(self, client: Querier, question: bytes) -> None:
        self.client = client
        self.question = question

    def connection_made(self, peer, local) -> Reply:
        return Reply((self.question,), alarm=0.5)

    def data_received(self, data: bytes) -> Reply:
        self.client.handle.send(b"answer: " + data + b"\n")
        return Reply(close=Close.AT_ONCE)

    def timed_out(self) -> Reply:
        self.client.handle.send(b"timeout\n")
        return NOTHING

    def connection_failed(self, error: Exception) -> None:
        self.client.handle.send(f"failed: {error}\n".encode())


class Querier(StreamProtocol):
    wakeable = True
    upstream_address: tuple[str, int] = ("127.0.0.1", 9)

    def data_received(self, data: bytes) -> Reply:
        for line in data.splitlines():
            self.handle.connect(self.upstream_address, Answer(self, line), udp=True)
        return NOTHING


class Poker(StreamProtocol):
    """Wakes the background job from a connection -- in a prefork worker or a fork child, another process."""

    job: Pinger | None = None

    def data_received(self, data: bytes) -> Reply:
        assert self.job is not None
        self.job.handle.wake()
        return Reply((b"poked\n",))


class Reporter(ClientProtocol):
    """One line to the job's target, then close."""

    def __init__(self, line: bytes, job: Pinger) -> None:
        self.line = line
        self.job = job

    def connection_made(self, peer, local) -> Reply:
        return Reply((self.line,), Close.AT_ONCE)

    def connection_failed(self, error: Exception) -> None:
        self.job.finished()

    def connection_lost(self) -> None:
        self.job.finished()


class Pinger(Job):
    target: tuple[str, int] = ("127.0.0.1", 9)

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self.in_flight = 0

    def started(self) -> Reply:
        self.timer = self.handle.call_later(0.1, self.tick)
        return NOTHING

    def _report(self, line: str) -> None:
        self.in_flight += 1
        self.handle.connect(self.target, Reporter(f"job {os.getpid()} {line}\n".encode(), self))

    def tick(self) -> Reply:
        self.count += 1
        self._report(str(self.count))
        self.timer = self.handle.call_later(0.1, self.tick)
        return NOTHING

    def woken(self) -> Reply:  # a connection woke it -- from a worker process, under prefork and fork
        if not self.stopping:
            self._report("poked")
        return NOTHING

    def finished(self) -> None:
        self.in_flight -= 1
        if self.stopping and self.in_flight == 0:
            self.handle.close()  # the job is done

    def stop_requested(self) -> Reply:
        self.stopping = True
        self.timer.cancel()
        self._report("stopping")
        return NOTHING

    def stopped(self) -> None:
        log.info("job stopped after %d reports", self.count)


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="eventloop")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--upstream", type=address, default=("127.0.0.1", 9))
    parser.add_argument("--upstream-unix", help="forward to this Unix socket instead")
    parser.add_argument("--udp-upstream", type=address, default=("127.0.0.1", 9))
    parser.add_argument("--job-target", type=address)
    parser.add_argument("--tls-ca", help="the CA that signed the TLS upstream's certificate")
    parser.add_argument("--tls-cert", nargs=2, metavar=("CERT", "KEY"), help="serve the stream over TLS too")
    args = parser.parse_args(argv)
    setup_logging(1)  # -v: the upstream lost and the job stopped are said at INFO
    Forwarder.upstream_address = args.upstream_unix or args.upstream
    Querier.upstream_address = args.udp_upstream
    TLSForwarder.context = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    listeners = []
    protocols = {"stream": EventStream, "tick": Ticker, "forward": Forwarder, "query": Querier}
    if args.tls_ca:
        protocols["tls-forward"] = TLSForwarder
    if args.tls_cert:
        protocols["tls-stream"] = TLSLayer.factory(server_context([tuple(args.tls_cert)]), EventStream)
    for name, factory in protocols.items():
        sock = socket.create_server(("127.0.0.1", 0))
        listeners.append(Listener(sock, factory, name=name))
    jobs = []
    if args.job_target is not None:
        Pinger.target = args.job_target
        Poker.job = Pinger()
        jobs.append(Poker.job)
        listeners.append(Listener(socket.create_server(("127.0.0.1", 0)), Poker, name="poke"))
    limits = Limits(grace=args.grace, workers=args.workers, idle_timeout=10.0)
    server = make_server(args.model, listeners, limits, jobs)
    for listener in listeners:
        host, port = listener.sock.getsockname()[:2]
        print(f"sockhop: {listener.name} tcp {host}:{port} (model {args.model})", file=sys.stderr, flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
