"""What every model shares: listeners, limits, signals, the stop flag -- and, for the blocking models, the accept
loop (socketserver's template: get_request -> verify -> process_request; each model overrides one hook)."""

from __future__ import annotations

import errno
import gc
import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable

from sockhop.engine.drive import drive_stream
from sockhop.engine.lifecycle import Deadline, Signals, StopFlag, Wakeup
from sockhop.engine.limits import Limits
from sockhop.engine.listener import Listener
from sockhop.engine.protocol import Address, Job, StreamProtocol
from sockhop.engine.reactor import Reactor, start_job_thread
from sockhop.engine.shared import peer_name, protocol_failed
from sockhop.errors import EngineError

log = logging.getLogger("sockhop.engine")

# accept() failing with these means the machine, not the client, is out of something: wait, do not spin.
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
RESOURCE_PAUSE = 0.1
_last_exhaustion_note = [0.0]


def note_exhaustion(exc_text: str = "out of file descriptors or memory") -> None:
    """Log running out of descriptors at most every 10 s: the pause repeats ten times a second while it lasts."""
    now = time.monotonic()
    if now - _last_exhaustion_note[0] >= 10.0:
        _last_exhaustion_note[0] = now
        log.warning("%s: pausing accept for %gs at a time until some close", exc_text, RESOURCE_PAUSE)


class Server:
    """Base of every model. ``serve()`` runs until a stop request and a graceful finish."""

    name = "?"
    supports_datagrams = True

    def __init__(
        self,
        listeners: list[Listener],
        limits: Limits | None = None,
        *,
        stop_flag: StopFlag | None = None,
        jobs: list[Job] | tuple = (),
    ) -> None:
        self.listeners = listeners
        self.background = tuple(jobs)  # background work (engine/reactor.py), started when the server serves
        self.limits = limits or Limits()
        if not self.supports_datagrams and any(not lst.is_stream for lst in listeners):
            raise EngineError(
                f"the {self.name} model cannot serve UDP (datagrams have no connections to hand out): "
                "use --model iterative, pool, eventloop or prefork"
            )
        self.stop_flag = stop_flag or StopFlag()
        self.wakeup = Wakeup()
        self.reloaders: list = []  # each listener's reload hook, once
        for listener in listeners:
            if listener.reload is not None and listener.reload not in self.reloaders:
                self.reloaders.append(listener.reload)
        hangup = (signal.SIGHUP,) if self.reloaders else ()
        self.signals = Signals(self.stop_flag, self.wakeup, (*self.extra_signals(), *hangup))

    def extra_signals(self) -> tuple[signal.Signals, ...]:
        return ()

    def handle_hangup(self) -> None:
        """SIGHUP: let each service reload what it serves. A failing hook costs only its own reload."""
        for reload in self.reloaders:
            try:
                reload()
            except Exception as exc:
                log.error("reload failed: %s: %s", type(exc).__name__, exc)
                log.debug("traceback", exc_info=exc)

    def stop(self) -> None:
        """Ask the server to stop gracefully; safe from any thread."""
        self.stop_flag.request()
        self.wakeup.poke()

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until stopped. ``on_ready`` is called once the signal handlers are in place, so whoever is told
        the server is up can stop it gracefully from then on."""
        self.signals.install()
        # Whatever exists now (modules, zones, a site's cache) lives as long as the server: keep it out of the
        # cyclic collector's walks, which otherwise grow with it, and out of copy-on-write faults after a fork.
        gc.freeze()
        # Per connection a server makes a handful of container objects that reference counting frees; walking the
        # young ones every 700 allocations (Python's default) cost 5% of a one-request connection's work.
        gc.set_threshold(10_000)
        try:
            if on_ready is not None:
                on_ready()
            self.run()
        finally:
            self.signals.restore()
            self.close_listeners()
            self.wakeup.close()
            self.stop_flag.close()

    def run(self) -> None:
        raise NotImplementedError

    def close_listeners(self) -> None:
        for listener in self.listeners:
            listener.sock.close()

    def refuse(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        """Over the connection limit: say so if the protocol has words for it, and close."""
        log.warning("%s: refused, at the limit of %d connections", peer_name(peer), self.limits.max_connections)
        if listener.refused is not None:
            listener.refused()
        try:
            conn.setblocking(False)
            if listener.busy:
                conn.send(listener.busy)
            # Bytes of the client's waiting unread: close at once, and TCP answers them with a reset, which tells
            # the client they were not read (sockhop talk says so). A FIN first would end its reading cleanly, and
            # a client that had half-closed would never see the reset.
            if not _client_bytes_waiting(conn):
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


def _client_bytes_waiting(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


class BlockingServer(Server):
    """The accept loop of the iterative, fork, thread and pool models. Subclasses override
    ``process_connection`` (and, for UDP, ``start_datagrams``) and ``finish``."""

    def __init__(self, listeners: list[Listener], limits: Limits | None = None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.active = 0
        self.lock = threading.Lock()
        self.job_thread: threading.Thread | None = None
        self.job_reactor: Reactor | None = None  # the jobs' thread's, closed in a forked child

    # -- hooks ---------------------------------------------------------------------------------------------------
    def process_connection(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        raise NotImplementedError

    def start_datagrams(self, listener: Listener) -> bool:
        """Arrange for a UDP socket to be served; False means "answer it inline from the accept loop"."""
        return False

    def answer_inline(self, listener: Listener) -> None:
        raise NotImplementedError

    def handle_signal(self, signum: int) -> None:
        pass

    def finish(self) -> None:
        """After the accept loop: let in-flight conversations end within the grace period."""

    def connection_count(self) -> int:
        return self.active

    # -- shared --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        poller = select.poll()
        by_fd: dict[int, Listener] = {}
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if listener.is_stream or not self.start_datagrams(listener):
                by_fd[listener.sock.fileno()] = listener
                poller.register(listener.sock, select.POLLIN)
        poller.register(self.stop_flag, select.POLLIN)
        poller.register(self.wakeup, select.POLLIN)
        paused: Deadline | None = None
        if self.background:  # the blocking models give background jobs a thread of their own
            jobs, stop_fd = list(self.background), self.stop_flag.fileno()
            self.job_thread, self.job_reactor = start_job_thread(jobs, self.limits, stop_fd)
        try:
            while not self.stop_flag.is_set:
                timeout = None if paused is None else paused.left() * 1000
                events = poller.poll(timeout)
                if paused is not None and paused.passed:
                    for fd in by_fd:
                        poller.register(fd, select.POLLIN)
                    paused = None
                for fd, _ in events:
                    if fd == self.wakeup.fileno():
                        self.wakeup.drain()
                        for signum in self.signals.take():
                            if signum == signal.SIGHUP:
                                self.handle_hangup()
                            else:
                                self.handle_signal(signum)
                    elif fd in by_fd and paused is None:
                        listener = by_fd[fd]
                        if not listener.is_stream:
                            self.answer_inline(listener)
                        elif not self.accept(listener):
                            note_exhaustion()
                            for lfd in by_fd:
                                poller.unregister(lfd)
                            paused = Deadline(RESOURCE_PAUSE)
                            break
        finally:
            self.close_listeners()
            log.info("%s: stopping, %d connection(s) in flight", self.name, self.connection_count())
            self.finish()
            if self.job_thread is not None:
                self.job_thread.join(self.limits.grace + 1.0)

    def accept(self, listener: Listener) -> bool:
        """Accept what is waiting (one, for a model that serves it before returning). False: out of resources."""
        for _ in range(self.accept_batch()):
            try:
                conn, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    return False
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if self.connection_count() >= self.limits.max_connections:
                self.refuse(conn, peer, listener)
                continue
            log.debug("%s: connected", peer_name(peer))
            self.process_connection(conn, peer, listener)
        return True

    def accept_batch(self) -> int:
        return 64

    def converse(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        """Make the protocol and drive the conversation to its end (in whichever thread or process runs it)."""
        try:
            protocol = listener.factory()
            assert isinstance(protocol, StreamProtocol)
        except Exception as exc:
            protocol_failed(peer, "factory", exc)
            conn.close()
            return
        drive_stream(conn, peer, protocol, self.limits, self.stop_flag.fileno())
        log.debug("%s: closed", peer_name(peer))
