"""A child process per accepted connection: the lecture's "handle multiple clients using fork()".

The parent accepts, forks, closes its copy of the connection and goes back to accepting; SIGCHLD wakes it to reap
(``waitpid(-1, WNOHANG)`` until none is left), so no child stays a zombie. The child resets its signals, closes
the sockets it does not own, serves its one client and always leaves through ``os._exit`` -- it never returns into
the parent's loop.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket

from sockhop.engine.base import BlockingServer
from sockhop.engine.lifecycle import Deadline, describe_status, reap, reset_after_fork
from sockhop.engine.listener import Listener
from sockhop.engine.protocol import Address
from sockhop.engine.shared import peer_name

log = logging.getLogger("sockhop.engine")


class ForkingServer(BlockingServer):
    name = "fork"
    supports_datagrams = False

    def __init__(self, listeners: list[Listener], limits=None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.children: dict[int, Address] = {}

    def extra_signals(self) -> tuple[signal.Signals, ...]:
        return (signal.SIGCHLD,)

    def connection_count(self) -> int:
        return len(self.children)

    def process_connection(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            log.warning("%s: cannot fork (%s): connection closed", peer_name(peer), exc.strerror)
            conn.close()
            return
        if pid == 0:
            status = 1
            try:
                reset_after_fork()
                for other in self.listeners:
                    other.sock.close()
                self.wakeup.close()
                if self.job_reactor is not None:
                    self.job_reactor.forget(keep_waking=True)  # the parent's connections are not the child's
                self.converse(conn, peer, listener)
                status = 0
            finally:
                os._exit(status)
        self.children[pid] = peer
        conn.close()

    def handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            reap(self._child_exited)

    def _child_exited(self, pid: int, status: int) -> None:
        peer = self.children.pop(pid, None)
        if status:
            log.warning("child %d (%s) %s", pid, peer_name(peer) if peer else "?", describe_status(status))

    def finish(self) -> None:
        """The children see the stop flag themselves and end within the grace period; wait for them, then kill
        what is left (a second Ctrl-C ends the wait at once)."""
        deadline = Deadline(self.limits.grace + 1.0)
        poller = select.poll()
        poller.register(self.wakeup, select.POLLIN)
        while self.children and not deadline.passed and self.stop_flag.requests < 2:
            reap(self._child_exited)
            if self.children:
                poller.poll(min(deadline.left(), 0.5) * 1000)  # SIGCHLD pokes the wakeup pipe
                self.wakeup.drain()
                self.signals.take()
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._child_exited(pid, status)
