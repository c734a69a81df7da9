"""One process, nonblocking sockets, epoll: the lecture's "nonblocking I/O".

Do a little work on one connection, then switch to whichever is ready. Output is written at once when the socket
takes it; what it does not take is queued and the connection is watched for write only while something is
pending. A connection whose queue passes ``Limits.write_buffer`` is not read from until it drains (backpressure),
so a client that never reads cannot grow the server's memory. Deadlines sit in a heap that is checked lazily:
activity only moves a number, it costs no heap operation; an entry that fires early is pushed again for the real
deadline, and one replaced by an earlier alarm is left to fall out as stale.

Deferred work (``Reply.then``, an fsync before SMTP's 250) runs on a small thread pool
(``Limits.deferred_threads``), or, for a ``Handoff``, with whoever it is handed to (a group commit thread); its
result comes back through the wakeup pipe, and the connection is not read from meanwhile.

What a protocol asks for when no bytes arrive (engine/reactor.py: wake-ups, timers, outbound connections, linked
backpressure) and the server's background jobs run on one reactor, made when first needed: its descriptor sits in
this loop's epoll set, its timers in this loop's heap, and a connection's handle acts through ``_apply`` as the
protocol's own replies do.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import select
import signal
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from sockhop.engine.base import RESOURCE_ERRORS, RESOURCE_PAUSE, Server, note_exhaustion
from sockhop.engine.listener import Listener
from sockhop.engine.mmsg import DatagramBatch, batch_for
from sockhop.engine.protocol import (
    WHEN_DRAINED,
    Address,
    Close,
    DatagramProtocol,
    FileRegion,
    Handoff,
    Job,
    Reply,
    StreamProtocol,
    as_reply,
)
from sockhop.engine.reactor import End, Handle, Jobs, Reactor, reset_on_close
from sockhop.engine.shared import (
    LINGER,
    MSG_MORE,
    RECV_SIZE,
    answer_datagrams,
    close_region,
    peer_name,
    protocol_failed,
    release,
    send_flags,
)

log = logging.getLogger("sockhop.engine")

_order = itertools.count()  # ties in the timer heap break on this, never on the connection object

IN = select.EPOLLIN | select.EPOLLRDHUP
OUT = select.EPOLLOUT
READABLE = IN | select.EPOLLERR | select.EPOLLHUP  # errors and hang-ups surface through recv
EPOLLIN = select.EPOLLIN
HANGUP = select.EPOLLERR | select.EPOLLHUP
EOF_LIMIT = -(1 << 62)  # Connection.limit once a wakeable connection's peer has half-closed: never read again
COMPACT_SLACK = 4096  # stale timer entries tolerated beyond twice the open connections before the heap is rebuilt
CLOSED_PROTOCOL = StreamProtocol()  # a closed connection's protocol: it answers nothing, holds nothing


class _Clock:
    """The stand-in for the reactor in the timer heap: it looks like a closed connection (``fd`` -1), so the heap's
    usual skipping of stale entries is where its entries are recognised -- no test on the loop's common path."""

    __slots__ = ()
    fd = -1
    gen = -1


CLOCK = _Clock()


class Connection:
    __slots__ = (
        "sock", "fd", "peer", "protocol", "out", "pending", "mask", "closing", "lingering", "eof",
        "deadline", "alarm", "scheduled", "gen", "busy", "stop_told", "heard", "drain", "limit", "end",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, peer: Address, protocol: StreamProtocol, limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.protocol = protocol
        self.out: deque = deque()  # bytes / memoryview / FileRegion not yet sent
        self.pending = 0  # bytes in out
        self.mask = IN
        self.closing = False  # close once out drains
        self.lingering = False  # write side shut; reading and dropping until the peer closes
        self.eof = False  # the peer half-closed
        self.deadline = 0.0  # idle deadline: moved on by every read, at no cost
        self.alarm = 0.0  # the protocol's own deadline (Reply.alarm), 0 if none
        self.scheduled = 0.0  # when its live timer-heap entry fires
        self.gen = 0  # heap entries of an older generation are stale and skipped
        self.busy = False  # deferred work running
        self.stop_told = False
        self.heard = False  # the client has sent something (a stop waits for a silent newcomer's first bytes)
        self.drain = False  # the protocol asked (WHEN_DRAINED) to hear when ``out`` has gone to the kernel
        self.limit = limit  # backlog over which reading stops: write_buffer, or -1 while a linked partner is full
        self.end: ServedEnd | None = None  # the engine's side of the protocol's handle, if it asked for one


class EventLoopServer(Server):
    name = "eventloop"

    def __init__(
        self,
        listeners: list[Listener],
        limits=None,
        *,
        exclusive: bool = False,
        share: int = 1,
        stop_flag=None,
        jobs: list[Job] | tuple = (),
    ) -> None:
        super().__init__(listeners, limits, stop_flag=stop_flag, jobs=jobs)
        self.exclusive = exclusive  # prefork workers share listeners: wake only one per connection
        self.max_connections = max(1, -(-self.limits.max_connections // share))
        self.conns: dict[int, Connection] = {}
        self.timers: list[tuple[float, int, int, Connection]] = []
        self.listener_fds: dict[int, Listener] = {}
        self.datagrams: dict[int, tuple[socket.socket, DatagramProtocol, DatagramBatch | None]] = {}
        self.done: deque = deque()  # (connection, reply or exception) from deferred work
        self.drained: list[Connection] = []  # output gone as asked (WHEN_DRAINED): output_drained() is due
        self.executor: ThreadPoolExecutor | None = None
        self.stopping_at: float | None = None
        self.paused_until: float | None = None
        self.ep: select.epoll | None = None
        self.local_of: dict[int, tuple | None] = {}  # listener fd -> its address, None for a wildcard
        self.debug = log.isEnabledFor(logging.DEBUG)  # formatting addresses for nothing costs per connection
        self.reactor: Reactor | None = None  # made when first needed: a handle asked for, or jobs to run
        self.clock_due = math.inf  # when the earliest entry for the reactor's timers in this loop's heap fires
        self.running_jobs: Jobs | None = None

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        ep = self.ep = select.epoll()
        try:
            self._register_listeners()
            ep.register(self.stop_flag.fileno(), select.EPOLLIN)
            ep.register(self.wakeup.fileno(), select.EPOLLIN)
            if self.background:
                self.running_jobs = Jobs(list(self.background), self._reactor())
                self.running_jobs.start()
            self._loop(ep)
        finally:
            for conn in list(self.conns.values()):
                self._close(conn)
            if self.running_jobs is not None:
                self.running_jobs.end_all()
            if self.reactor is not None:
                self.reactor.close()
            if self.executor is not None:
                self.executor.shutdown(wait=True, cancel_futures=True)
            ep.close()

    def _register_listeners(self) -> None:
        assert self.ep is not None
        flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if self.exclusive else 0)
        for listener in self.listeners:
            sock = listener.sock
            sock.setblocking(False)
            fd = sock.fileno()
            if listener.is_stream:
                self.listener_fds[fd] = listener
            else:
                protocol = listener.factory()
                assert isinstance(protocol, DatagramProtocol)
                self.datagrams[fd] = (sock, protocol, batch_for(sock))
            self.ep.register(fd, flags)

    def _loop(self, ep: select.epoll) -> None:
        conns = self.conns
        stop_fd = self.stop_flag.fileno()
        wake_fd = self.wakeup.fileno()
        recv_size = RECV_SIZE
        read, write = os.read, os.write
        idle = self.limits.idle_timeout
        monotonic = time.monotonic
        while True:
            timeout = self._next_timeout()
            if self.stopping_at is not None and not conns and not (self.running_jobs and self.running_jobs.running):
                return
            events = ep.poll(timeout)
            now = monotonic()
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is not None:
                    if ev != EPOLLIN:  # plain input, by far the most common event, needs none of these tests
                        if ev & OUT:
                            self._flush(conn)
                            if conn.fd < 0:
                                continue
                        if not ev & READABLE:
                            continue
                        if not conn.mask and ev & HANGUP:  # watched for nothing, and gone: it would wake us forever
                            self._close(conn)
                            continue
                    if conn.mask & EPOLLIN:
                        if conn.busy:  # input while deferred work runs: it waits in the kernel till that is done
                            self._update_mask(conn)
                            continue
                        try:
                            data = read(conn.fd, recv_size)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError as exc:
                            log.debug("%s: %s", peer_name(conn.peer), exc)
                            self._close(conn)
                            continue
                        if conn.lingering:
                            if not data:
                                self._close(conn)
                            continue
                        conn.deadline = now + idle
                        if data:
                            conn.heard = True
                            try:
                                reply = conn.protocol.data_received(data)
                            except Exception as exc:
                                protocol_failed(conn.peer, "data_received", exc)
                                self._close(conn)
                                continue
                            # The hot path (bytes to send, nothing queued, nothing else asked): send them here.
                            if isinstance(reply, bytes):
                                piece = reply
                            else:
                                send = reply.send
                                if (
                                    len(send) == 1
                                    and reply.then is None
                                    and not reply.close
                                    and reply.alarm is None
                                    and type(send[0]) is bytes
                                ):
                                    piece = send[0]
                                else:
                                    piece = None
                            if piece is not None:
                                if conn.out or self.stopping_at is not None:
                                    reply = as_reply(reply)  # the general way: a Reply stays the one it was
                                else:
                                    try:
                                        sent = write(conn.fd, piece)
                                    except (BlockingIOError, InterruptedError):
                                        sent = 0
                                    except OSError as exc:
                                        log.debug("%s: %s", peer_name(conn.peer), exc)
                                        self._close(conn)
                                        continue
                                    if sent == len(piece):
                                        continue
                                    reply = Reply((memoryview(piece)[sent:],))  # the rest goes the general way
                        else:
                            conn.eof = True
                            try:
                                reply = conn.protocol.eof_received()
                                if conn.end is None:
                                    reply = reply._replace(close=True)  # nothing more to answer
                                else:  # a wakeable protocol may answer later (a proxy's upstream): read no more
                                    conn.limit = EOF_LIMIT
                            except Exception as exc:
                                protocol_failed(conn.peer, "eof_received", exc)
                                self._close(conn)
                                continue
                        self._apply(conn, reply)
                        if self.stopping_at is not None:
                            self._tell_stop(conn)
                elif fd in self.listener_fds:
                    self._accept(self.listener_fds[fd], now)
                elif fd in self.datagrams:
                    answer_datagrams(*self.datagrams[fd])
                elif fd == wake_fd:
                    self.wakeup.drain()
                    if signal.SIGHUP in self.signals.take():
                        self.handle_hangup()
                    self._finish_deferred()
                    if self.stop_flag.requests > 1:  # asked twice: stop now
                        for conn in list(conns.values()):
                            self._close(conn)
                elif fd == stop_fd:
                    self._begin_stop(now)
                elif self.reactor is not None and fd == self.reactor.fileno():
                    self.reactor.run_ready()
            if self.drained:
                self._call_drained()
            if self.timers and self.timers[0][0] <= now:
                self._expire(now)
            if self.stopping_at is not None and now >= self.stopping_at:
                for conn in list(conns.values()):
                    log.debug("%s: closed at the end of the grace period", peer_name(conn.peer))
                    self._close(conn)
                if self.running_jobs is not None:
                    self.running_jobs.end_all()
            if self.paused_until is not None and now >= self.paused_until:
                self.paused_until = None
                for lfd in self.listener_fds:
                    ep.register(lfd, select.EPOLLIN | (select.EPOLLEXCLUSIVE if self.exclusive else 0))

    def _call_drained(self) -> None:
        drained, self.drained = self.drained, []
        for conn in drained:
            if conn.fd < 0 or conn.busy:
                continue
            try:
                reply = as_reply(conn.protocol.output_drained())
            except Exception as exc:
                protocol_failed(conn.peer, "output_drained", exc)
                self._close(conn)
                continue
            self._apply(conn, reply)

    def _next_timeout(self) -> float:
        if self.drained:
            return 0
        wake = []
        if self.timers:
            wake.append(self.timers[0][0])
        if self.paused_until is not None:
            wake.append(self.paused_until)
        if self.stopping_at is not None:
            wake.append(self.stopping_at)
        if not wake:
            return -1
        return max(0.0, min(wake) - time.monotonic()) + 0.001

    def _reactor(self) -> Reactor:
        if self.reactor is None:
            self.reactor = Reactor(self.limits, on_schedule=self._clock_at)
            assert self.ep is not None
            self.ep.register(self.reactor.fileno(), select.EPOLLIN)
        return self.reactor

    def _clock_at(self, when: float) -> None:
        """A reactor's timer is set: an entry in the loop's own heap wakes the loop for it, so the loop's timeout and
        expiry need no look at the reactor on every turn. One entry wakes it for the earliest: a timer due later
        than one already waited for adds none (a read timeout set per upstream connection would otherwise leave an
        entry per connection for the whole timeout); once it fires, the reactor's next deadline gets its own."""
        if when < self.clock_due:
            self.clock_due = when
            heapq.heappush(self.timers, (when, next(_order), 0, CLOCK))

    # -- accepting -----------------------------------------------------------------------------------------------
    def _accept(self, listener: Listener, now: float) -> None:
        assert self.ep is not None
        lsock = listener.sock
        family, kind, proto = lsock.family.value, lsock.type.value, lsock.proto
        # The local address of a connection is the listener's, unless it listens on every interface.
        local = self.local_of.get(lsock.fileno(), ())
        if local == ():
            name = lsock.getsockname()
            local = self.local_of[lsock.fileno()] = None if name[0] in ("0.0.0.0", "::") else name
        for _ in range(128):
            try:
                # socket.accept() without its per-call IntEnum conversions: this runs once per connection.
                fd, peer = lsock._accept()
                sock = socket.socket(family, kind, proto, fileno=fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    note_exhaustion()
                    for lfd in self.listener_fds:
                        self.ep.unregister(lfd)
                    self.paused_until = now + RESOURCE_PAUSE
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if len(self.conns) >= self.max_connections:
                self.refuse(sock, peer, listener)
                continue
            # Nonblocking, at the price of an ioctl per connection: reads and writes are then os.read and os.write,
            # whose arguments cost a fraction of what recv's and send's do (a fifth of the engine's work per echo).
            sock.setblocking(False)
            try:
                protocol = listener.factory()
                assert isinstance(protocol, StreamProtocol)
            except Exception as exc:
                protocol_failed(peer, "factory", exc)
                sock.close()
                continue
            conn = Connection(sock, peer, protocol, self.limits.write_buffer)
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, IN)
            conn.deadline = now + self.limits.idle_timeout
            self._schedule(conn, conn.deadline)
            if protocol.wakeable:
                conn.end = ServedEnd(self, conn)
                try:
                    protocol.attach(Handle(conn.end, protocol))
                except Exception as exc:
                    protocol_failed(peer, "attach", exc)
                    self._close(conn)
                    continue
            if self.debug:
                log.debug("%s: connected", peer_name(peer))
            try:
                reply = protocol.connection_made(peer, local or sock.getsockname())
            except Exception as exc:
                protocol_failed(peer, "connection_made", exc)
                self._close(conn)
                continue
            self._apply(conn, reply)

    # -- output --------------------------------------------------------------------------------------------------
    def _apply(self, conn: Connection, reply: Reply) -> None:
        """Carry out a protocol's reply: queue and try to send, close when asked, hand off deferred work."""
        if conn.fd < 0:
            release(reply.send)
            return
        if reply.send:
            if conn.out:
                for piece in reply.send:
                    self._queue(conn, piece)
            else:
                pieces = reply.send
                for i, piece in enumerate(pieces):
                    if type(piece) is bytes:
                        try:
                            if i + 1 < len(pieces) and send_flags(pieces, i):  # (a one-piece reply: no call)
                                sent = conn.sock.send(piece, MSG_MORE)
                            else:
                                sent = os.write(conn.fd, piece)
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                        except OSError as exc:
                            log.debug("%s: %s", peer_name(conn.peer), exc)
                            release(pieces[i:])
                            self._close(conn)
                            return
                        if sent < len(piece):
                            self._queue(conn, memoryview(piece)[sent:])
                            for rest in pieces[i + 1 :]:
                                self._queue(conn, rest)
                            break
                    else:
                        self._queue(conn, piece)
                        for rest in pieces[i + 1 :]:
                            self._queue(conn, rest)
                        self._flush(conn)
                        if conn.fd < 0:
                            return
                        break
        if reply.close:
            conn.closing = reply.close
        if reply.alarm is not None:
            self._set_alarm(conn, reply.alarm)
        if reply.then is not None:
            self._defer(conn, reply)
        elif conn.closing and not conn.out:
            self._end(conn)
        else:
            self._update_mask(conn)

    def _queue(self, conn: Connection, piece) -> None:
        if piece is WHEN_DRAINED:
            conn.drain = True
            return
        if isinstance(piece, FileRegion):
            conn.pending += piece.count
        else:
            if not piece:
                return
            conn.pending += len(piece)
        conn.out.append(piece)

    def _flush(self, conn: Connection) -> None:
        """Send queued output until the socket is full or the queue is empty."""
        out = conn.out
        try:
            while out:
                piece = out[0]
                if isinstance(piece, FileRegion):
                    sent = os.sendfile(conn.fd, piece.fd, piece.offset, piece.count) if piece.count else 0
                    if sent == 0 or sent == piece.count:
                        out.popleft()
                        close_region(piece)
                        conn.pending -= piece.count
                        continue
                    out[0] = FileRegion(piece.fd, piece.offset + sent, piece.count - sent, piece.close)
                else:
                    sent = conn.sock.send(piece, MSG_MORE) if send_flags(out, 0) else os.write(conn.fd, piece)
                    if sent == len(piece):
                        out.popleft()
                    else:
                        out[0] = memoryview(piece)[sent:]
                conn.pending -= sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.debug("%s: %s", peer_name(conn.peer), exc)
            self._close(conn)
            return
        if not out and conn.drain:
            conn.drain = False
            if not conn.closing:
                self.drained.append(conn)  # called from the loop, so a fast reader cannot make this recursion
        if not out and conn.closing and not conn.busy:
            self._end(conn)
        else:
            self._update_mask(conn)

    def _update_mask(self, conn: Connection) -> None:
        """Watch for write only while output is pending; stop reading while the backlog is over the limit or
        deferred work runs."""
        if conn.fd < 0:
            return
        mask = 0
        if conn.out:
            mask |= OUT
        if not conn.busy and not conn.closing and conn.pending <= conn.limit:
            mask |= IN
        if conn.lingering:
            mask = IN
        if mask != conn.mask:
            conn.mask = mask
            assert self.ep is not None
            self.ep.modify(conn.fd, mask)
            if conn.end is not None:
                conn.end.check_backlog()  # drained: a linked partner may be read again

    # -- deferred work -------------------------------------------------------------------------------------------
    def _defer(self, conn: Connection, reply: Reply) -> None:
        conn.busy = True
        if conn.out:  # else reading stops only if the client sends meanwhile: no epoll_ctl, twice, per deferral
            self._update_mask(conn)
        then = reply.then
        assert then is not None
        if isinstance(then, Handoff):  # no thread of ours waits: the doer calls back, finish() runs here

            def done(result: object) -> None:
                self.done.append((conn, then, result))
                self.wakeup.poke()

            try:
                then.start(done)
            except Exception as exc:
                self.done.append((conn, None, exc))
                self.wakeup.poke()
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.limits.deferred_threads, thread_name_prefix="deferred")

        def run() -> None:
            try:
                result: object = then()
            except Exception as exc:
                result = exc
            self.done.append((conn, None, result))
            self.wakeup.poke()

        self.executor.submit(run)

    def _finish_deferred(self) -> None:
        while self.done:
            conn, handoff, result = self.done.popleft()
            conn.busy = False
            if handoff is not None and conn.fd >= 0:
                try:
                    result = handoff.finish(result)
                except Exception as exc:
                    result = exc
            if conn.fd < 0:
                if isinstance(result, Reply):
                    release(result.send)
                continue
            if isinstance(result, Exception):
                protocol_failed(conn.peer, "deferred work", result)
                self._close(conn)
                continue
            conn.deadline = time.monotonic() + self.limits.idle_timeout
            self._apply(conn, result)
            if self.stopping_at is not None:
                self._tell_stop(conn)

    # -- timers and closing --------------------------------------------------------------------------------------
    def _schedule(self, conn: Connection, when: float) -> None:
        conn.gen += 1
        conn.scheduled = when
        heapq.heappush(self.timers, (when, next(_order), conn.gen, conn))

    def _set_alarm(self, conn: Connection, seconds: float) -> None:
        if seconds <= 0:
            conn.alarm = 0.0
            return
        conn.alarm = time.monotonic() + seconds
        if conn.alarm < conn.scheduled:
            self._schedule(conn, conn.alarm)

    def _compact_timers(self) -> None:
        """Drop the heap entries of closed connections and replaced deadlines. They fall out lazily when due, but a
        connection a client opens and closes at once would otherwise stay referenced for the whole idle timeout --
        15,000 a second for a minute is 900,000 dead connections held, and a garbage collector walking them all."""
        timers = self.timers  # in place: _expire may be walking it when a close calls this
        timers[:] = [entry for entry in timers if (entry[3].fd >= 0 and entry[2] == entry[3].gen) or entry[3] is CLOCK]
        heapq.heapify(timers)

    def _expire(self, now: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, gen, conn = heapq.heappop(timers)
            if conn.fd < 0 or gen != conn.gen:
                if conn is CLOCK and self.reactor is not None:  # a timer of the reactor's is due
                    self.clock_due = math.inf
                    self.reactor.run_due()
                    due = self.reactor.deadline()
                    if due is not None:
                        self._clock_at(due)
                continue  # closed, or replaced by an earlier deadline
            due = min(conn.deadline, conn.alarm) if conn.alarm else conn.deadline
            if due > now:
                self._schedule(conn, due)  # active since: the real deadline moved on
                continue
            if conn.lingering or (not conn.busy and conn.closing):
                self._close(conn)
                continue
            if conn.busy:  # deferred work runs: no clock runs against the client meanwhile
                conn.deadline = now + self.limits.idle_timeout
                self._schedule(conn, conn.deadline)
                continue
            if conn.alarm and conn.alarm <= now:
                log.debug("%s: the protocol's alarm went off, closed", peer_name(conn.peer))
            else:
                log.debug("%s: idle for %gs, closed", peer_name(conn.peer), self.limits.idle_timeout)
            conn.alarm = 0.0
            try:
                reply = conn.protocol.timed_out()
            except Exception as exc:
                protocol_failed(conn.peer, "timed_out", exc)
                reply = Reply()
            self._apply(conn, Reply(reply.send, close=True))
            if conn.fd >= 0:
                self._close(conn)  # a silent client gets no linger: what did not fit is dropped

    def _end(self, conn: Connection) -> None:
        """Output done and the protocol asked to close: close at once if the peer has closed too or will send no
        more, else half-close and drain its input for a moment (lingering close), so a reset cannot destroy our
        last reply."""
        if conn.eof or conn.closing == Close.AT_ONCE:
            self._close(conn)
            return
        if conn.closing == Close.RESET:
            reset_on_close(conn.sock)
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.lingering = True
        conn.closing = False
        conn.deadline = min(conn.deadline, time.monotonic() + LINGER)
        conn.alarm = 0.0
        if conn.deadline < conn.scheduled:
            self._schedule(conn, conn.deadline)
        self._update_mask(conn)

    def _close(self, conn: Connection) -> None:
        if conn.fd < 0:
            return
        self.conns.pop(conn.fd, None)
        if len(self.timers) > 2 * len(self.conns) + COMPACT_SLACK:
            self._compact_timers()
        conn.sock.close()  # which also takes it out of the epoll set: no descriptor of it is shared
        conn.fd = -1
        release(tuple(conn.out))
        conn.out.clear()
        if conn.end is not None:
            conn.end.check_backlog()  # a partner held back by this connection's backlog is read again
        try:
            conn.protocol.connection_lost()
        except Exception as exc:
            protocol_failed(conn.peer, "connection_lost", exc)
        # The timer heap may hold the closed connection until it compacts (up to COMPACT_SLACK entries): what it
        # holds is this small record, not the protocol's buffers, parser and proxied partner.
        conn.protocol = CLOSED_PROTOCOL
        if self.debug:
            log.debug("%s: closed", peer_name(conn.peer))

    def _begin_stop(self, now: float) -> None:
        """Stop accepting, tell every conversation, and give them the grace period."""
        assert self.ep is not None
        if self.stopping_at is None:
            log.info("%s: stopping, %d connection(s) in flight", self.name, len(self.conns))
            self.ep.unregister(self.stop_flag.fileno())
            for fd in list(self.listener_fds) + list(self.datagrams):
                try:
                    self.ep.unregister(fd)
                except (OSError, ValueError):
                    pass
            self.listener_fds.clear()
            self.datagrams.clear()
            self.paused_until = None
            self.close_listeners()
            self.stopping_at = now + self.limits.grace
            for conn in list(self.conns.values()):
                self._tell_stop(conn)
            if self.running_jobs is not None:
                self.running_jobs.stop()

    def _tell_stop(self, conn: Connection) -> None:
        """Call stop_requested once -- but not while deferred work runs: the contract promises a protocol no other
        call meanwhile (its then() may be touching the same state). Such a connection is told when it finishes.

        Nor before the client has sent anything: one that connected just before the stop is told with its first
        bytes, so it gets what it came for (a restart under load refuses nobody); a silent one ends with the grace.
        """
        if conn.fd < 0 or conn.stop_told or conn.busy or conn.closing or conn.lingering or not conn.heard:
            return
        conn.stop_told = True
        try:
            reply = conn.protocol.stop_requested()
        except Exception as exc:
            protocol_failed(conn.peer, "stop_requested", exc)
            self._close(conn)
            return
        self._apply(conn, reply)


class ServedEnd(End):
    """The engine's side of a served connection's handle: what a wake-up, a timer or a partner answers is carried
    out as the protocol's own replies are, and moves the idle deadline on (a stream written to only by the server,
    Server-Sent Events, is not idle)."""

    def __init__(self, server: EventLoopServer, conn: Connection) -> None:
        super().__init__(server._reactor())
        self.server = server
        self.conn = conn
        self.peer = conn.peer

    @property  # type: ignore[override]
    def closed(self) -> bool:
        return self.conn.fd < 0

    @property
    def pending(self) -> int:
        return self.conn.pending

    def run(self, fn, mapping, where: str) -> None:
        if self.conn.busy:  # deferred work runs: no other call meanwhile, as the contract promises -- come back
            self.reactor.call_later(0.005, self, lambda: self.run(fn, mapping, where))
            return
        super().run(fn, mapping, where)

    def carry_out(self, reply: Reply) -> None:
        conn, server = self.conn, self.server
        if conn.fd < 0:
            release(reply.send)
            return
        conn.deadline = time.monotonic() + server.limits.idle_timeout
        server._apply(conn, reply)
        if server.stopping_at is not None:
            server._tell_stop(conn)
        self.check_backlog()

    def pause_reading(self) -> None:
        if self.conn.limit == EOF_LIMIT:
            return
        self.conn.limit = -1
        self.server._update_mask(self.conn)

    def resume_reading(self) -> None:
        if self.conn.limit == EOF_LIMIT:
            return
        self.conn.limit = self.server.limits.write_buffer
        self.server._update_mask(self.conn)

    def abort(self) -> None:
        if self.conn.fd >= 0:
            reset_on_close(self.conn.sock)
            self.server._close(self.conn)
