"""``sockhop up --config``: each service of the file in its own ``sockhop serve`` process, watched together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Protocol

from sockhop.console import say
from sockhop.process.restart import remove_pid_file, write_pid_file


class ServiceConfig(Protocol):
    """What the supervisor needs of a service of the file (config.py's ServiceConfig has it): a name for its lines
    and the ``sockhop`` arguments that run it. Said here, so that this module does not import the file's reader."""

    name: str
    argv: Sequence[str]


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


class Supervisor:
    """The services' masters, as ``up --config`` watches them.

    Following a zero-downtime restart: on SIGUSR2 each master starts its successor as its own child (see
    :mod:`sockhop.process.restart`), hands it the sockets, drains and exits. ``up`` is a child subreaper
    (``PR_SET_CHILD_SUBREAPER``), so the kernel makes that successor ``up``'s child the moment the old master
    exits; when ``up`` reaps the old master it finds the new one among its children -- the same command line --
    and watches it instead. A master that exits with no successor is handled as before: status 0 is a service
    stopped, anything else stops the others. Without the subreaper (not Linux) the successor goes to init and
    ``up`` stops watching that service.
    """

    def __init__(self, configs: list[ServiceConfig], base: str, *, pid_file: str | None = None) -> None:
        self.configs = configs
        self.base = base
        self.pid_file = pid_file  # up's own pid: the one to signal, which passes the signal on
        self.masters: dict[int, ServiceConfig] = {}  # pid -> the service it serves
        self.forwarded: list[int] = []
        self.restarting: set[int] = set()  # masters sent SIGUSR2: one that exits 0 has handed over to a successor

    def command(self, config: ServiceConfig) -> list[str]:
        return [sys.executable, "-m", "sockhop", *config.argv]

    def run(self) -> int:
        adopting = _prctl(PR_SET_CHILD_SUBREAPER, 1)
        me = os.getpid()

        def end_with_up() -> None:
            # In each child. Its own process group: Ctrl-C in a terminal reaches up alone, which passes it on once
            # (a second SIGINT would end a master's graceful stop at once). SIGTERM, a graceful stop, if up dies,
            # even by SIGKILL -- the one thing up cannot pass on.
            os.setpgid(0, 0)
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != me:
                os.kill(os.getpid(), signal.SIGTERM)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self.forward)
        for config in self.configs:
            proc = subprocess.Popen(self.command(config), cwd=self.base, preexec_fn=end_with_up)
            self.masters[proc.pid] = config
        if self.pid_file:
            write_pid_file(self.pid_file)
        try:
            return self._watch(adopting)
        finally:
            if self.pid_file:
                remove_pid_file(self.pid_file)

    def _watch(self, adopting: bool) -> int:
        status = 0
        while self.masters:
            pid, code = _wait_any()
            config = self.masters.pop(pid, None)
            if config is None:
                continue  # an orphan handed to us that is no master (none expected)
            restarted = pid in self.restarting
            self.restarting.discard(pid)
            successor = self.successor(config) if adopting and restarted and code == 0 else None
            if successor is not None:
                self.masters[successor] = config
                say(f"sockhop up: {config.name}: master {successor} took over from {pid}")
                if self.forwarded:  # a stop came while the old one drained: the new one stops too
                    self._kill(successor, self.forwarded[-1])
                continue
            if code != 0 and not self.forwarded:
                say(f"sockhop up: {config.name} stopped with status {code}; stopping the others")
                status = 1
                self.forward(signal.SIGTERM, None)
        return status

    def forward(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR2:
            self.restarting.update(self.masters)
        else:
            self.forwarded.append(signum)
        for pid in list(self.masters):
            self._kill(pid, signum)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def successor(self, config: ServiceConfig) -> int | None:
        """The restarted master of ``config`` among up's children (reparented here when its parent exited, having
        waited for its own workers: nothing else of it can be here)."""
        command = "\0".join(self.command(config)) + "\0"
        for pid in _children():
            if pid in self.masters:
                continue
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    if f.read() == command:
                        return pid
            except OSError:
                continue
        return None


def _children() -> list[int]:
    me = os.getpid()
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{task}/children") as f:
                pids += [int(pid) for pid in f.read().split()]
    except OSError:
        pass
    return pids


def _wait_any() -> tuple[int, int]:
    while True:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        return pid, os.waitstatus_to_exitcode(status)
