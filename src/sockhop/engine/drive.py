"""One protocol over one blocking socket: the loop the iterative, fork, thread and pool models share.

recv -> protocol -> sendall/sendfile, with the idle timeout and the graceful stop enforced here, once. The driver
polls the connection and the engine's stop flag together, so a stop request reaches a blocked reader at once.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import time

from sockhop.engine.limits import Limits
from sockhop.engine.mmsg import batch_for
from sockhop.engine.protocol import (
    WHEN_DRAINED,
    Address,
    Close,
    DatagramProtocol,
    FileRegion,
    Reply,
    StreamProtocol,
    as_reply,
)
from sockhop.engine.reactor import End, Handle, Reactor, reset_on_close
from sockhop.engine.shared import (
    GONE,
    LINGER,
    RECV_SIZE,
    answer_datagrams,
    close_region,
    peer_name,
    protocol_failed,
    release,
    send_flags,
)

log = logging.getLogger("sockhop.engine")


def send_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_SNDTIMEO: a blocking send gives up after this long, so a client that never reads cannot hold a thread
    forever -- the kernel keeps the clock, no extra poll per send."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def send_blocking(sock: socket.socket, pieces: tuple) -> None:
    """Send every piece in order on a blocking socket: bytes with sendall, file regions with sendfile. Files of
    pieces not sent (the peer went away) are closed all the same."""
    for i, piece in enumerate(pieces):
        try:
            if isinstance(piece, FileRegion):
                send_region(sock, piece)
            elif piece:
                sock.sendall(piece, send_flags(pieces, i))
        except BaseException:
            release(pieces[i + 1 :])
            raise


def send_region(sock: socket.socket, piece: FileRegion) -> None:
    try:
        offset, left = piece.offset, piece.count
        while left > 0:
            sent = os.sendfile(sock.fileno(), piece.fd, offset, left)
            if sent == 0:
                break  # the file shrank under us: send what there was
            offset += sent
            left -= sent
    finally:
        close_region(piece)


def carry_out(sock: socket.socket, reply: Reply, protocol: StreamProtocol | None = None) -> Reply:
    """Send a reply, then run its deferred work (blocking is fine here) and send what that answers, to the end of
    the chain; a reply ending in WHEN_DRAINED is sent, then ``protocol.output_drained()`` is. Returns the chain
    folded into one reply: closing if any link asked to, the last alarm set."""
    send_blocking(sock, reply.send)
    close, alarm = reply.close, reply.alarm
    while True:
        if reply.then is not None:
            reply = reply.then()
        elif protocol is not None and reply.send and reply.send[-1] is WHEN_DRAINED and not close:
            reply = as_reply(protocol.output_drained())
        else:
            break
        send_blocking(sock, reply.send)
        close = close or reply.close
        alarm = alarm if reply.alarm is None else reply.alarm
    return Reply((), close, None, alarm)


def linger_close(sock: socket.socket, seconds: float = LINGER) -> None:
    """Half-close, then read and discard until the peer closes or time runs out, then close.

    Closing a socket that still has unread input makes the kernel send a reset, and a reset can destroy our last
    reply before the peer reads it (nginx's lingering_close exists for this).
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + seconds
        sock.settimeout(seconds)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            if not sock.recv(RECV_SIZE):
                break
    except OSError:
        pass
    finally:
        sock.close()


def alarm_time(reply: Reply, current: float | None) -> float | None:
    """Where a reply moves the protocol's alarm: unchanged (None), cleared (0) or so many seconds from now."""
    if reply.alarm is None:
        return current
    return time.monotonic() + reply.alarm if reply.alarm > 0 else None


def drive_stream(sock: socket.socket, peer: Address, protocol: StreamProtocol, limits: Limits, stop_fd: int) -> None:
    """Serve one connection to its end. Never raises for the peer's or the protocol's faults; closes ``sock``."""
    sock.setblocking(True)
    send_timeout(sock, limits.idle_timeout)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(stop_fd, select.POLLIN)
    fd = sock.fileno()
    stop_deadline: float | None = None
    stop_pending = False  # the stop came before the client said anything: tell the protocol with its first bytes
    heard = False
    peer_closed = False
    where = "connection_made"
    reply: Reply | None = None
    reactor: Reactor | None = None
    end: DrivenEnd | None = None
    reactor_fd = -1
    try:
        if protocol.wakeable:  # wake-ups, timers and outbound connections: a reactor of this connection's own
            reactor = Reactor(limits)
            end = DrivenEnd(reactor, sock, peer, poller, protocol)
            reactor_fd = reactor.fileno()
            poller.register(reactor_fd, select.POLLIN)
            where = "attach"
            protocol.attach(Handle(end, protocol))
            where = "connection_made"
        reply = carry_out(sock, protocol.connection_made(peer, sock.getsockname()), protocol)
        alarm_at = alarm_time(reply, None)
        while not reply.close:
            now = time.monotonic()
            timeout = limits.idle_timeout
            if stop_deadline is not None:
                timeout = min(timeout, stop_deadline - now)
            if alarm_at is not None:
                timeout = min(timeout, alarm_at - now)
            timer_first = False
            if reactor is not None:
                left = reactor.timeout()
                if left is not None and left < timeout:
                    timeout, timer_first = left, True
            events = poller.poll(int(timeout * 1000) + 1 if timeout > 0 else 0)
            if reactor is not None and end is not None:
                where = "a timer"
                reactor.run_due()
                if end.touched or (timer_first and not events):
                    reply = end.take()
                    alarm_at = alarm_time(reply, alarm_at)
                    if reply.close:
                        break
                    if not events:
                        continue
            if not events:
                now = time.monotonic()
                if stop_deadline is not None and now >= stop_deadline:
                    log.debug("%s: closed at the end of the grace period", peer_name(peer))
                    break
                if alarm_at is not None and now >= alarm_at:
                    log.debug("%s: the protocol's alarm went off, closed", peer_name(peer))
                else:
                    log.debug("%s: idle for %gs, closed", peer_name(peer), limits.idle_timeout)
                where = "timed_out"
                reply = carry_out(sock, protocol.timed_out())
                break
            for event_fd, _ in events:
                if event_fd == reactor_fd:
                    assert reactor is not None and end is not None
                    where = "woken"
                    reactor.run_ready()
                    reply = end.take()
                elif event_fd == fd:
                    data = sock.recv(RECV_SIZE)
                    if data:
                        heard = True
                        where = "data_received"
                        reply = as_reply(protocol.data_received(data))
                        if stop_pending and not reply.close:
                            stop_pending = False
                            reply = carry_out(sock, reply, protocol)
                            alarm_at = alarm_time(reply, alarm_at)
                            where = "stop_requested"
                            reply = protocol.stop_requested()
                    else:
                        peer_closed = True
                        where = "eof_received"
                        reply = protocol.eof_received()
                        if end is None:
                            reply = reply._replace(close=True)  # nothing more can arrive, so nothing more to answer
                        else:  # a wakeable protocol may answer later (a proxy's upstream): read no more
                            end.half_closed()
                else:
                    poller.unregister(stop_fd)
                    stop_deadline = time.monotonic() + limits.grace
                    if not heard:  # a newcomer: let it say what it came for first
                        stop_pending = True
                        continue
                    where = "stop_requested"
                    reply = protocol.stop_requested()
                reply = carry_out(sock, reply, protocol)
                alarm_at = alarm_time(reply, alarm_at)
                if reply.close:
                    break
    except GONE as exc:
        log.debug("%s: %s", peer_name(peer), exc)
        peer_closed = True
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, errno.EAGAIN):
            log.warning("%s: %s", peer_name(peer), exc)
        peer_closed = True
    except Exception as exc:
        protocol_failed(peer, where, exc)
        if reply is not None:
            release(reply.send)
    finally:
        if end is not None:
            end.closed = True
        try:
            protocol.connection_lost()
        except Exception as exc:
            protocol_failed(peer, "connection_lost", exc)
        if reactor is not None:
            reactor.close()
        if reply is not None and reply.close == Close.RESET:
            reset_on_close(sock)
            sock.close()
        elif peer_closed or (reply is not None and reply.close == Close.AT_ONCE):
            sock.close()
        else:
            linger_close(sock, min(LINGER, limits.grace))


def serve_datagram(sock: socket.socket, protocol: DatagramProtocol, stop_fd: int) -> None:
    """Answer datagrams on ``sock`` until the stop flag is set; several threads may run this on one socket, the
    kernel hands each datagram to exactly one of them."""
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(stop_fd, select.POLLIN)
    fd = sock.fileno()
    batch = batch_for(sock)  # this thread's own buffers
    while True:
        for event_fd, _ in poller.poll():
            if event_fd != fd:
                return
            answer_datagrams(sock, protocol, batch)


class DrivenEnd(End):
    """The engine's side of a handle under the blocking models: what a wake-up, a timer or a partner answers is
    sent at once with the blocking calls (a slow reader holds this thread, and so the upstream, back: that is the
    backpressure here), and what it asks of the connection -- close, alarm -- is folded for the driver's loop."""

    def __init__(
        self, reactor: Reactor, sock: socket.socket, peer: Address, poller: select.poll, protocol: StreamProtocol
    ) -> None:
        super().__init__(reactor)
        self.protocol = protocol  # told output_drained() after a reply ending in WHEN_DRAINED, as in the loop
        self.sock = sock
        self.peer = peer
        self.poller = poller
        self.touched = False
        self.close: bool | Close = False
        self.alarm: float | None = None
        self.paused = False
        self.eof = False

    def carry_out(self, reply: Reply) -> None:
        if self.closed:
            release(reply.send)
            return
        self.touched = True
        try:
            folded = carry_out(self.sock, reply, self.protocol)
        except OSError as exc:  # the client went away while a wake-up or a partner was writing to it
            log.debug("%s: %s", peer_name(self.peer), exc)
            self.closed = True
            self.close = Close.AT_ONCE
            return
        self.close = self.close or folded.close
        if folded.alarm is not None:
            self.alarm = folded.alarm
        if self.close:
            self.closed = True

    def take(self) -> Reply:
        """What the handle's calls asked of the connection since last taken."""
        reply = Reply((), self.close, None, self.alarm)
        self.touched, self.alarm = False, None
        return reply

    def abort(self) -> None:
        self.carry_out(Reply(close=Close.RESET))

    def half_closed(self) -> None:
        self.pause_reading()
        self.eof = True

    def pause_reading(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.poller.unregister(self.sock)

    def resume_reading(self) -> None:
        if self.paused and not self.closed and not self.eof:
            self.paused = False
            self.poller.register(self.sock, select.POLLIN)
