"""The queue runner: delivery from the spool (``--spool``) as an engine Job, the MTA's outbound half.

It keeps its schedule in memory: one scan of ``queue/``'s names when it starts (and when ``sockhop queue --flush``
or ``--release`` was given, or a prefork worker queued a message), then a timer per message for its next try; a
message queued in this process wakes it with its id, and only that message is scheduled. A message
due is read, its recipients grouped by destination (their domain, or the ``--relayhost``), and handed to that
destination, which finds its mail exchangers (MX in preference order, an implicit MX, a null MX refused; asked
over the engine's own UDP, :mod:`sockhop.mail.lookup`) and opens at most ``--relay-concurrency``
connections (:class:`~sockhop.mail.outbound.Conversation`) through the engine, each carrying message after message.
An address that cannot be reached or will not talk passes the work to the next.

What comes back settles each recipient: a 250 -- only then -- marks it delivered in ``state/`` (the message goes
when none remains, its files unlinked by a thread of the runner's rather than on the loop); a 5xx bounces it (an
RFC 3464 DSN queued to the sender, from the null sender, never for a bounce); a 4xx or no answer defers the message
on Postfix's backoff (``--retry-first``, doubling up to ``--retry-max``) until ``--queue-lifetime`` has passed,
when what remains bounces too.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sockhop.engine.protocol import NOTHING, Job, Reply
from sockhop.tlsclient import client_context

from .address import split_address
from .bounce import Failure, make_bounce, status_of
from .client import Outcome
from .codes import is_transient
from .lookup import find_hops
from .outbound import Conversation, Message
from .protocol import Envelope, Session
from .spool import QueueEntry, Spool, SpoolError, envelope_line

log = logging.getLogger("sockhop.mail")

FLUSH = "flush"  # the spool's file `sockhop queue --flush` touches: the runner looks at its time once a second
IDLE_TIME = 2.0  # seconds an idle connection waits for more (Postfix's smtp_connection_cache_time_limit)
RESOLVE_TTL = 60.0  # seconds a destination's addresses are used before they are looked up again
ACTIVE_LIMIT = 1000  # messages read and being delivered at once (Postfix's qmgr_message_active_limit, smaller)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the runner delivers (the mail service's relay options)."""

    hostname: str
    dns: str | None = None
    port: int | None = None  # of every MX (default: an _smtp._tcp SRV record's, else 25)
    relayhost: tuple[str, int] | None = None  # every message goes there, as Postfix's relayhost
    tls: dict[str, str] = field(default_factory=dict)  # domain -> required | opportunistic | off
    default_tls: str = "opportunistic"
    cafile: str | None = None
    concurrency: int = 20  # connections per destination (Postfix's default_destination_concurrency_limit)
    first_retry: float = 300.0  # Postfix's minimal_backoff_time
    max_retry: float = 4000.0  # maximal_backoff_time
    lifetime: float = 5 * 86400.0  # maximal_queue_lifetime
    connect_timeout: float = 30.0  # smtp_connect_timeout
    timeout_scale: float = 1.0

    def backoff(self, attempts: int) -> float:
        return min(self.first_retry * 2 ** max(0, attempts - 1), self.max_retry)


@dataclass
class Run:
    """One try of one message: the outcomes as they come back from each destination."""

    queue_id: str
    sender: str
    arrival: float
    attempts: int
    content: bytes
    waiting: int = 0  # destinations still to answer
    entry: QueueEntry | None = None  # as read for this try: the recipients it had left
    #: each recipient's outcome, with the status a bounce gives it when no server answered (4.4.1 unreachable;
    #: 5.1.2, 5.1.10 for a domain that does not exist or takes no mail) and whether that is final
    outcomes: list[tuple[Outcome, str, bool]] = field(default_factory=list)


class Destination:
    """Where a domain's mail goes: its addresses, the messages waiting for a connection, the connections open."""

    def __init__(self, runner: QueueRunner, key: str, domain: str) -> None:
        self.runner = runner
        self.key = key
        self.domain = domain
        self.queue: deque[tuple[Message, Run]] = deque()
        self.hops: list[tuple[str, int, str]] | None = None
        self.resolved_at = 0.0
        self.resolving = False
        self.open = 0  # connections
        self.starting = 0  # of which not yet carrying a message (connecting, or idle and woken)
        self.idle: list[Conversation] = []  # open, waiting for a message

    def add(self, message: Message, run: Run) -> None:
        self.queue.append((message, run))
        self.pump()

    def pump(self) -> None:
        if not self.queue:
            return
        if (self.hops is None or time.monotonic() - self.resolved_at > RESOLVE_TTL) and self.open == 0:
            self._resolve()
            return
        while self.idle and len(self.queue) > self.starting:
            talk = self.idle.pop()
            talk.carrying = False
            self.starting += 1
            talk.handle.wake()
        while self.open < self.runner.policy.concurrency and len(self.queue) > self.starting:
            self.open += 1
            self.starting += 1
            self._connect(0)

    def _resolve(self) -> None:
        if self.resolving:
            return
        self.resolving = True
        runner = self.runner
        find_hops(runner.handle, self.domain, runner.dns_servers, runner.policy.port, self._resolved)

    def _resolved(self, result: object) -> Reply:
        from .mx import NoSuchDomain, NullMX

        self.resolving = False
        if isinstance(result, list) and result:
            self.hops, self.resolved_at = result, time.monotonic()
            self.pump()
            return NOTHING
        if isinstance(result, NullMX | NoSuchDomain):
            status, error, final = ("5.1.10" if isinstance(result, NullMX) else "5.1.2"), str(result), True
        else:
            error = str(result) if isinstance(result, Exception) else f"{self.domain}: no address for its exchangers"
            status, final = "4.4.3", False
        self.fail_all(error, status=status, final=final)
        return NOTHING

    def _connect(self, index: int) -> None:
        assert self.hops is not None
        address, port, name = self.hops[index]
        policy = self.runner.policy
        mode = policy.tls.get(self.domain, policy.default_tls)
        context = self.runner.context(mode)
        where = f"{name}[{address}]:{port}"
        talk = Conversation(where, policy.hostname, take=lambda: self._take(talk), report=self.runner.report,
                            ended=lambda c, error: self._ended(c, error, index), tls=mode,
                            can_tls=context is not None, timeout_scale=policy.timeout_scale,
                            idle=self._idle)  # fmt: skip
        talk.carrying = False
        self.runner.handle.connect((address, port), talk, tls=context, server_hostname=name if context else None,
                                   timeout=policy.connect_timeout, starttls=True)  # fmt: skip

    def _idle(self, talk: Conversation) -> float:
        """Nothing to carry now: keep the connection a while for the next message (not while stopping)."""
        if self.runner.stopping:
            return 0.0
        self.idle.append(talk)
        return IDLE_TIME

    def _take(self, talk: Conversation) -> Message | None:
        if not talk.carrying:
            talk.carrying = True
            self.starting -= 1
        if not self.queue or self.runner.stopping:
            return None
        message, run = self.queue.popleft()
        self.runner.in_flight[id(message)] = run
        return message

    def _ended(self, talk: Conversation, error: str | None, index: int) -> None:
        if not talk.ready and error is not None and self.hops and index + 1 < len(self.hops):
            self._connect(index + 1)  # this address is no use: the next one takes over
            return
        self.open -= 1
        if talk in self.idle:
            self.idle.remove(talk)
        elif not talk.carrying:
            self.starting -= 1
        if error is not None:
            log.info("mail: %s: %s", self.domain, error)
            if not talk.ready:  # no address of the destination would take mail: everything waiting waits longer
                self.fail_all(error, status="4.4.1", final=False)
                return
        self.pump()

    def fail_all(self, error: str, *, status: str, final: bool) -> None:
        waiting, self.queue = list(self.queue), deque()
        for message, run in waiting:
            self.runner.settle(run, [Outcome(r, None, error=error) for r in message.recipients],
                               status=status, final=final)  # fmt: skip


class QueueRunner(Job):
    """Delivers what the spool holds; woken (``handle.wake()``) when a message is queued."""

    def __init__(self, spool: Spool, policy: DeliveryPolicy) -> None:
        self.spool = spool
        self.policy = policy
        self.scheduled: dict[str, object] = {}  # queue id -> its Timer, or None while due or being tried
        self.due: deque[str] = deque()
        self.active = 0  # messages being tried
        self.pumping = False
        self.destinations: dict[str, Destination] = {}
        self.in_flight: dict[int, Run] = {}
        self.contexts: dict[str, ssl.SSLContext | None] = {}
        self.scan_due = False
        self.stopping = False
        self.flush_seen = self._flush_time()
        self.local: Any = None  # the server's own mail store (the Router): is_local(domain), deliver(...)
        # delivered messages whose files a thread of the runner's unlinks (an unlink of a 100 KiB file costs the
        # loop ~0.7 ms, and more while the group commit syncs): a rescan leaves them alone meanwhile
        self.removing: set[str] = set()
        self.written: dict[str, tuple[bytes, bytes]] = {}  # queued here, not yet tried: its envelope line and text
        self._removals: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._remover: threading.Thread | None = None
        from sockhop.dns.resolver import server_addresses

        self.dns_servers = [] if policy.relayhost else server_addresses(policy.dns)  # --dns, or /etc/resolv.conf's

    def wake(self, queue_id: str | None = None, written: tuple[bytes, bytes] | None = None) -> None:
        """A message was queued (from any thread or process): look at the queue soon. Given its id, in this process
        only that message is scheduled -- no rescan of ``queue/`` per message, which costs a listing of every name
        queued (and of ``state/``) for each one accepted -- and with ``written`` (its file's envelope line and text,
        as the group commit wrote them) its first try does not read the file back; from another process (a prefork
        worker) the call is not carried, only the wake, and ``woken()`` rescans."""
        handle = getattr(self, "handle", None)
        if handle is None:
            return
        if queue_id is None:
            handle.wake()
        else:
            handle.call_soon(lambda: self.queued(queue_id, written))

    def queued(self, queue_id: str, written: tuple[bytes, bytes] | None = None) -> Reply:
        """One message just queued (on the engine's thread): due now, unless it is scheduled already (a rescan
        found it first). Its text is kept for the first try while few are (at most ACTIVE_LIMIT: a backlog is read
        from the files as it is reached, not held in memory)."""
        if queue_id not in self.scheduled and queue_id not in self.removing and not self.stopping:
            if written is not None and len(self.written) < ACTIVE_LIMIT:
                self.written[queue_id] = written
            self._schedule(queue_id, 0.0)
        return NOTHING

    # -- the job's events ------------------------------------------------------------------------------------------
    def started(self) -> Reply:
        self.scan()
        self.handle.call_later(1.0, self.tick)
        return NOTHING

    def woken(self) -> Reply:
        if not self.scan_due:
            self.scan_due = True
            self.handle.call_later(0.0, self.scan)
        return NOTHING

    def stopped(self) -> None:
        """The removals asked for are done before the server exits (else each would be a duplicate delivery)."""
        if self._remover is not None:
            self._removals.put(None)
            self._remover.join(10.0)
            self._remover = None

    def stop_requested(self) -> Reply:
        self.stopping = True  # connections finish the message they carry, then say QUIT
        for destination in self.destinations.values():
            for talk in destination.idle:
                talk.handle.wake()  # nothing more to take: QUIT now
        return Reply(close=not self.in_flight)

    # -- the schedule -------------------------------------------------------------------------------------------------
    def _flush_time(self) -> float:
        try:
            return os.stat(self.spool.root / FLUSH).st_mtime
        except OSError:
            return 0.0

    def tick(self) -> Reply:
        """Once a second: has ``sockhop queue --flush`` (or ``--release``) asked for a run?"""
        seen = self._flush_time()
        if seen != self.flush_seen:
            self.flush_seen = seen
            for queue_id, timer in list(self.scheduled.items()):
                if timer is not None:
                    timer.cancel()  # type: ignore[attr-defined]
                    del self.scheduled[queue_id]
            self.scan()
        if not self.stopping:
            self.handle.call_later(1.0, self.tick)
        return NOTHING

    def scan(self) -> Reply:
        """Every queued message not yet scheduled: tried now, or at its next try."""
        self.scan_due = False
        if self.stopping:
            return NOTHING
        try:
            names = self.spool.ids(held=False)
        except OSError as exc:
            log.error("mail: cannot read the queue: %s", exc.strerror)
            return NOTHING
        now = time.time()
        tried = self.spool.tried()  # names only: a message never tried is due now, its file not opened
        for queue_id in names:
            if queue_id not in self.scheduled and queue_id not in self.removing:
                self._schedule(queue_id, self.spool.next_try(queue_id) - now if queue_id in tried else 0.0)
        return NOTHING

    def _schedule(self, queue_id: str, delay: float) -> None:
        if delay > 0:
            self.scheduled[queue_id] = self.handle.call_later(delay, lambda: self._due(queue_id))
        else:
            self._due(queue_id)

    def _due(self, queue_id: str) -> Reply:
        self.scheduled[queue_id] = None
        self.due.append(queue_id)
        if not self.pumping:
            self.pumping = True
            self.handle.call_later(0.0, self._pump)
        return NOTHING

    def _pump(self) -> Reply:
        """Try what is due, at most ACTIVE_LIMIT messages at a time (each is read into memory)."""
        self.pumping = False
        while self.due and self.active < ACTIVE_LIMIT and not self.stopping:
            self.attempt(self.due.popleft())
        return NOTHING

    def attempt(self, queue_id: str) -> Reply:
        """Try a message: its recipients still to deliver, grouped by destination."""
        written = self.written.pop(queue_id, None)
        try:
            if self.stopping:
                loaded = None
            elif written is not None:  # just queued: what the commit wrote, the file only looked for
                loaded = self.spool.loaded(queue_id, *written)
            else:
                loaded = self.spool.load(queue_id)  # one read: envelope, text, state
        except (OSError, SpoolError, ValueError):
            loaded = None
        if loaded is None or not loaded[0].recipients:
            self.scheduled.pop(queue_id, None)
            return NOTHING
        entry, envelope, content = loaded
        self.active += 1
        groups: dict[str, list[str]] = {}
        for rcpt in entry.recipients:
            groups.setdefault(split_address(rcpt)[1].lower().rstrip("."), []).append(rcpt)
        run = Run(queue_id, entry.sender, entry.arrival, entry.attempts, content, waiting=len(groups), entry=entry)
        utf8 = bool(envelope.get("smtputf8"))
        for domain, rcpts in groups.items():
            key = "[relayhost]" if self.policy.relayhost else domain
            dest = self.destinations.get(key)
            if dest is None:
                dest = self.destinations[key] = Destination(self, key, domain)
                if self.policy.relayhost:
                    host, port = self.policy.relayhost
                    dest.hops, dest.resolved_at = [(host, port, host)], float("inf")
            dest.add(Message(queue_id, entry.sender, tuple(rcpts), content, utf8), run)
        return NOTHING

    def context(self, mode: str) -> ssl.SSLContext | None:
        """STARTTLS's context: ``required`` checks the certificate (against ``--relay-cacert`` or the system's
        store), ``opportunistic`` encrypts without checking -- whatever CA was named, as Postfix's ``may``: a
        destination with a certificate nobody here trusts still gets its mail encrypted rather than not at all."""
        if mode not in self.contexts:
            if mode == "off":
                self.contexts[mode] = None
            else:
                self.contexts[mode] = client_context(self.policy.cafile, verify=mode == "required")
        return self.contexts[mode]

    # -- results ------------------------------------------------------------------------------------------------------
    def report(self, message: Message, outcomes: list[Outcome]) -> None:
        run = self.in_flight.pop(id(message), None)
        if run is not None:
            self.settle(run, outcomes)

    def settle(self, run: Run, outcomes: list[Outcome], *, status: str = "4.4.1", final: bool = False) -> None:
        """One destination's answer; the message's fate once every destination has answered."""
        run.outcomes += [(outcome, status, final) for outcome in outcomes]
        run.waiting -= 1
        if run.waiting <= 0:
            self.active -= 1
            if self.due and not self.pumping:
                self.pumping = True
                self.handle.call_later(0.0, self._pump)
            try:
                self._finish(run)
            except (OSError, SpoolError) as exc:
                log.error("mail: %s: cannot record its delivery: %s", run.queue_id, getattr(exc, "strerror", exc))
                self._schedule(run.queue_id, self.policy.first_retry)
        if self.stopping and not self.in_flight:
            self.handle.close()

    def _finish(self, run: Run) -> None:
        now = time.time()
        done: list[str] = []
        failed: list[tuple[Outcome, str]] = []
        later: list[tuple[Outcome, str]] = []
        for o, status, final in run.outcomes:
            if o.delivered:
                done.append(o.recipient)
                log.info("mail: %s: to <%s> via %s: %s", run.queue_id, o.recipient, o.where, o.reply)
            elif (o.reply is not None and not is_transient(o.reply.code)) or (o.reply is None and final):
                failed.append((o, status))
            else:
                later.append((o, status))
        if later and now - run.arrival >= self.policy.lifetime:  # too long in the queue: what is left bounces
            failed += [(o, "5.4.7") for o, _ in later]  # RFC 3463: delivery time expired
            later = []
        if failed:
            self._bounce(run, failed)
        settled = done + [o.recipient for o, _ in failed]
        if settled and run.entry is not None and not set(run.entry.recipients) - set(settled):
            self.scheduled.pop(run.queue_id, None)
            self._remove(run.queue_id)  # nothing left: the files go, off the loop
            return
        if settled:
            self.spool.delivered(run.queue_id, settled, sync=False)
        if later:
            error = "; ".join(dict.fromkeys(o.describe() for o, _ in later))
            next_try = now + self.policy.backoff(run.attempts + 1)
            self.spool.defer(run.queue_id, error, next_try, sync=False)
            log.info("mail: %s: deferred: %s", run.queue_id, error)
            self._schedule(run.queue_id, next_try - now)
        else:
            self.scheduled.pop(run.queue_id, None)

    # -- removal of what is delivered ----------------------------------------------------------------------------------
    def _remove(self, queue_id: str) -> None:
        """Every recipient settled: the message's files are unlinked by the runner's thread, not on the loop. A crash
        before that means the message is tried again -- a duplicate, never a loss (as ``delivered(sync=False)``)."""
        self.removing.add(queue_id)
        if self._remover is None:
            self._remover = threading.Thread(target=self._remove_loop, name="spool-remover", daemon=True)
            self._remover.start()
        self._removals.put(queue_id)

    def _remove_loop(self) -> None:
        while True:
            first = self._removals.get()
            batch = [first]
            while not self._removals.empty():
                batch.append(self._removals.get())
            ids = [queue_id for queue_id in batch if queue_id is not None]
            for queue_id in ids:
                try:
                    self.spool.delete(queue_id, sync=False)
                except SpoolError:
                    pass  # gone already (sockhop queue --delete)
                except OSError as exc:
                    log.error("mail: %s: cannot remove it from the queue: %s", queue_id, exc.strerror)
            if ids:
                self.handle.call_soon(lambda ids=ids: self._removed(ids))
            if None in batch:
                return

    def _removed(self, ids: list[str]) -> Reply:
        self.removing.difference_update(ids)
        return NOTHING

    def _bounce(self, run: Run, failed: list[tuple[Outcome, str]]) -> None:
        """An RFC 3464 DSN to the sender, queued like any message -- unless the message is itself a bounce."""
        for o, _ in failed:
            log.info("mail: %s: to <%s> bounced: %s", run.queue_id, o.recipient, o.describe())
        if not run.sender:
            return  # never a bounce for a bounce (RFC 5321 6.1)
        failures = []
        for o, status in failed:
            expired = status == "5.4.7"
            if o.reply is not None:
                host = o.where.split("[", 1)[0]
                said = status if expired else status_of(o.reply.code, o.reply.status)
                failures.append(Failure(o.recipient, said, str(o.reply), host))
            else:
                reason = o.error + ("; the message stayed in the queue too long" if expired else "")
                failures.append(Failure(o.recipient, status, reason=reason))
        content = make_bounce(self.policy.hostname, run.sender, run.arrival, run.content, failures)
        local = self.local
        if local is not None and local.is_local(split_address(run.sender)[1]):
            # the server's own user: into the mailbox now, durably (one group commit), before the recipients that
            # bounced are settled -- a crash in between means the bounce twice, never not at all
            envelope = Envelope(sender="", recipients=[run.sender], content=content)
            local.deliver(Session(helo=self.policy.hostname), envelope)
            return
        queue_id = self.spool.enqueue(envelope_line("", [run.sender], time.time()), content)
        self._schedule(queue_id, 0.0)
