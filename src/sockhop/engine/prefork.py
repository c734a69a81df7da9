"""The hybrid: N worker processes, each an event loop, sharing the listening sockets; a master keeps them alive.

Each worker registers the shared listeners with EPOLLEXCLUSIVE, so a new connection wakes one worker, not all.
The master does nothing but watch: its signal handlers only record, its loop reaps with ``waitpid(-1, WNOHANG)``,
logs each death and forks a replacement. A worker that fails before it can serve exits with WORKER_BOOT_ERROR,
and the master stops rather than respawning forever (gunicorn's rule).
"""

from __future__ import annotations

import ctypes  # here, not in the worker: after --user drops privileges, imports may no longer be readable
import logging
import os
import select
import signal
import time

from sockhop.engine.base import Server
from sockhop.engine.eventloop import EventLoopServer
from sockhop.engine.lifecycle import Deadline, describe_status, reap, reset_after_fork
from sockhop.engine.reactor import Jobs, Reactor
from sockhop.errors import EngineError

log = logging.getLogger("sockhop.engine")

WORKER_BOOT_ERROR = 3
PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    """In a worker: be sent SIGKILL if the master dies (even by SIGKILL), so no worker is left orphaned serving
    on its own. Linux only; elsewhere the master's graceful stop is what ends workers."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the master died before the line above took effect
        os._exit(0)


RESPAWN_DELAY = 1.0  # a worker that died within this long of starting is replaced only after this long


class PreforkServer(Server):
    name = "prefork"

    def __init__(self, listeners, limits=None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.count = self.limits.worker_count()
        self.workers: dict[int, float] = {}  # pid -> when it started
        self.respawn_at: list[float] = []
        self.failed = False
        # Background jobs run here, in the master, once: not in a worker, which the master may replace mid-job
        # (a respawn would restart a delivery or a transfer in flight, and two could overlap), nor in every worker.
        self.reactor: Reactor | None = None
        self.running_jobs: Jobs | None = None

    def extra_signals(self) -> tuple[signal.Signals, ...]:
        return (signal.SIGCHLD,)

    def run(self) -> None:
        if self.background:  # handles before the workers are forked, so their protocols can wake the jobs here
            self.reactor = Reactor(self.limits)
            self.running_jobs = Jobs(list(self.background), self.reactor)
            self.running_jobs.attach()
        for _ in range(self.count):
            self.spawn()
        poller = select.poll()
        poller.register(self.wakeup, select.POLLIN)
        poller.register(self.stop_flag, select.POLLIN)
        if self.reactor is not None and self.running_jobs is not None:  # started once the workers are forked
            poller.register(self.reactor.fileno(), select.POLLIN)
            self.running_jobs.start()
        try:
            self._watch(poller)
        finally:
            if self.running_jobs is not None:
                self.running_jobs.end_all()
            if self.reactor is not None:
                self.reactor.close()

    def _run_jobs(self) -> None:
        if self.reactor is not None:
            self.reactor.run_ready()
            self.reactor.run_due()

    def _watch(self, poller: select.poll) -> None:
        while not self.stop_flag.is_set:
            timeout = None
            if self.respawn_at:
                timeout = max(0.0, min(self.respawn_at) - time.monotonic()) * 1000 + 1
            if self.reactor is not None:
                left = self.reactor.timeout()
                if left is not None:
                    timeout = min(timeout, left * 1000 + 1) if timeout is not None else left * 1000 + 1
            poller.poll(timeout)
            self._run_jobs()
            self.wakeup.drain()
            if signal.SIGHUP in self.signals.take():
                self.handle_hangup()  # the master too: workers it forks later start from the new data
                for pid in self.workers:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass
            reap(self.worker_exited)
            if self.failed:
                self.stop_flag.request()
                break
            now = time.monotonic()
            due = [t for t in self.respawn_at if t <= now]
            self.respawn_at = [t for t in self.respawn_at if t > now]
            for _ in due:
                if not self.stop_flag.is_set:
                    self.spawn()
        self.close_listeners()
        log.info("prefork: stopping %d worker(s)", len(self.workers))
        if self.running_jobs is not None:
            self.running_jobs.stop()
        self.finish()
        if self.failed:
            raise EngineError("a worker could not start; see the log above")

    def spawn(self) -> None:
        # A SIGHUP forwarded while the new worker has no handler yet would kill it: hold SIGHUP back across the
        # fork; the worker lets it through once it watches SIGHUP itself.
        hangup = {signal.SIGHUP} if self.reloaders else set()
        signal.pthread_sigmask(signal.SIG_BLOCK, hangup)
        master = os.getpid()
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, hangup)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, hangup)
            self.workers[pid] = time.monotonic()
            log.info("prefork: worker %d started", pid)
            return
        status = WORKER_BOOT_ERROR
        try:
            end_with_parent(master)
            reset_after_fork()
            self.wakeup.close()
            if self.reactor is not None:  # the master's jobs and their connections stay the master's; a wake reaches it
                self.reactor.forget(keep_waking=True)
            worker = EventLoopServer(
                self.listeners, self.limits, exclusive=True, share=self.count, stop_flag=self.stop_flag
            )
            if worker.reloaders:
                worker.signals.watch(signal.SIGHUP)  # the master forwards SIGHUP; the worker's loop reloads
            signal.pthread_sigmask(signal.SIG_UNBLOCK, hangup)
            status = 1
            worker.run()
            status = 0
        except BaseException as exc:
            if status == WORKER_BOOT_ERROR:
                log.error("prefork: worker %d could not start: %s", os.getpid(), exc)
            else:
                log.error("prefork: worker %d failed: %s: %s", os.getpid(), type(exc).__name__, exc)
        finally:
            os._exit(status)

    def worker_exited(self, pid: int, status: int) -> None:
        started = self.workers.pop(pid, None)
        if started is None:
            return
        if self.stop_flag.is_set:
            log.info("prefork: worker %d %s", pid, describe_status(status))
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
            log.error("prefork: worker %d could not start; not respawning", pid)
            self.failed = True
            return
        log.warning("prefork: worker %d %s; starting a new one", pid, describe_status(status))
        soon = time.monotonic()
        if soon - started < RESPAWN_DELAY:
            soon += RESPAWN_DELAY  # crash loop: do not fork as fast as it dies
        self.respawn_at.append(soon)

    def finish(self) -> None:
        deadline = Deadline(self.limits.grace + 1.0)
        poller = select.poll()
        poller.register(self.wakeup, select.POLLIN)
        if self.reactor is not None:
            poller.register(self.reactor.fileno(), select.POLLIN)
        jobs = self.running_jobs
        while (self.workers or (jobs and jobs.running)) and not deadline.passed and self.stop_flag.requests < 2:
            reap(self.worker_exited)
            if self.workers or (jobs and jobs.running):
                wait = min(deadline.left(), 0.5)
                if self.reactor is not None:
                    wait = self.reactor.timeout(wait) or 0.0
                poller.poll(wait * 1000 + 1)
                self._run_jobs()
                self.wakeup.drain()
                self.signals.take()
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
