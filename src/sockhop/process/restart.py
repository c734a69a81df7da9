"""Zero-downtime restart on SIGUSR2, as nginx's binary upgrade and gunicorn's USR2 do.

The running master starts a new sockhop -- the same command line, so a new version of the code if one was
installed -- and hands it its listening sockets across exec (``SOCKHOP_FDS`` names the descriptors, which
``pass_fds`` keeps at the same numbers). The new one takes them instead of binding (see
:class:`sockhop.process.activation.InheritedSockets`) and, once it serves, says so on a pipe (``SOCKHOP_READY_FD``).
Only then does the old master stop gracefully: it closes its copies of the sockets and lets its conversations
finish within the grace period.

No connection is refused meanwhile: the listening sockets are never closed -- both processes hold the same open
sockets, and a connection that arrives while neither accepts waits in the kernel's backlog. If the new one fails
to start, the old one keeps serving and says why.

The signal handler only records (it sets an event); a helper thread of the master does the work, so no model's
loop needs to know about SIGUSR2. Forked workers and children never see the thread.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sockhop import console
from sockhop.process.activation import SOCKHOP_FDS

if TYPE_CHECKING:
    from sockhop.engine.base import Server

log = logging.getLogger("sockhop.engine")

READY_FD = "SOCKHOP_READY_FD"
READY_TIMEOUT = 30.0


def say(text: str) -> None:
    console.say(f"sockhop: {text}")


def announce_ready(pid_file: str | None = None) -> None:
    """Serving now: write the pid file, tell systemd (``Type=notify``: this process is the main one now, also after
    a restart), and in a new master tell the old one (nothing if this process was not started by a restart)."""
    if pid_file:
        write_pid_file(pid_file)
    notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"r")
        os.close(int(fd))
    except (OSError, ValueError):
        pass


def write_pid_file(path: str) -> None:
    """The pid, replaced in one rename so a reader never sees half a number."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(temporary, path)
    except OSError as exc:
        say(f"cannot write the pid file {path}: {exc.strerror}")


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (kept in the environment, so a master
    started by a SIGUSR2 restart can say MAINPID=itself; the unit sets NotifyAccess=all for that)."""
    import socket

    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    if where.startswith("@"):
        where = "\0" + where[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(where)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", where, exc.strerror)


class Restarter:
    """Watches SIGUSR2 in the master; ``stop`` ends the old server once the new one serves."""

    def __init__(self, fds: list[int], stop: Callable[[], None], command: list[str] | None = None) -> None:
        self.fds = fds
        self.stop = stop
        self.command = command or [sys.executable, "-m", "sockhop", *sys.argv[1:]]
        self.requested = threading.Event()
        self.done = False
        self.handed_over = False
        self.previous = None

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGUSR2, self._record)
        # Signals are the main thread's: one delivered to the helper would not wake the main loop's poll. A new
        # thread inherits the signal mask, so block everything around its creation, not inside it (no window).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            threading.Thread(target=self._wait, name="sockhop-restart", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGUSR2, self.previous)
        self.done = True
        self.requested.set()

    def _record(self, signum: int, frame: object) -> None:
        self.requested.set()

    def _wait(self) -> None:
        while True:
            self.requested.wait()
            if self.done:
                return
            self.requested.clear()
            if self.restart():
                return

    def restart(self) -> bool:
        """Start the new master and wait until it serves. True: it does, and this one is stopping."""
        r, w = os.pipe()
        env = {**os.environ, SOCKHOP_FDS: ",".join(map(str, self.fds)), READY_FD: str(w)}
        try:
            proc = subprocess.Popen(self.command, pass_fds=(*self.fds, w), env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            say(f"restart failed: cannot start {self.command[0]}: {exc.strerror}; still serving")
            os.close(r)
            os.close(w)
            return False
        os.close(w)
        try:
            poller = select.poll()
            poller.register(r, select.POLLIN)
            ready = bool(poller.poll(READY_TIMEOUT * 1000)) and os.read(r, 1) == b"r"
        finally:
            os.close(r)
        if not ready:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            say(f"restart failed: the new master {proc.pid} did not start serving; still serving")
            return False
        say(f"restarted: new master {proc.pid} serves; master {os.getpid()} stops accepting and drains")
        self.handed_over = True
        self.stop()
        return True


def serve_restartable(
    server: Server, fds: list[int], announce: Callable[[], None], *, pid_file: str | None = None
) -> bool:
    """Serve until stopped; once serving, SIGUSR2 hands ``fds`` -- every listening socket the command line opened
    -- to a new master running the same command line. True if it did (this one drained). The handler is in place
    before ``announce`` says so: whoever reads the announcement may signal at once."""
    restarter = Restarter(fds, server.stop)

    def ready() -> None:
        restarter.install()
        announce()
        announce_ready(pid_file)

    try:
        server.serve(on_ready=ready)
    finally:
        restarter.uninstall()
        if pid_file and not restarter.handed_over:
            remove_pid_file(pid_file)
    return restarter.handed_over


def remove_pid_file(path: str) -> None:
    """On a stop that hands over to no one: the pid file goes, if it still names this process."""
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except (OSError, ValueError):
        pass
