"""What every driver shares -- the blocking loop (drive.py), the event loop, and the TLS and PROXY layers: how a
peer is named in the log, how a protocol's failure is kept to its own connection, how files that will never be sent
are released, and how waiting datagrams are read and answered.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from sockhop.engine.mmsg import SLOTS, DatagramBatch
from sockhop.engine.protocol import Address, DatagramProtocol, FileRegion
from sockhop.net.addresses import format_address

log = logging.getLogger("sockhop.engine")

# 64 KiB, not more: glibc serves larger allocations with mmap, and recv() allocates its whole buffer before
# shrinking it, so recv(256 KiB) costs an mmap/munmap pair per call -- measured 7x slower for small messages.
RECV_SIZE = 64 * 1024
LINGER = 2.0  # seconds to drain a closing peer's input so our last bytes are not lost to a reset
MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: hold this send for the next one


def send_flags(pieces, i: int) -> int:
    """The flags for sending bytes ``pieces[i]``: MSG_MORE when a file region with bytes in it follows, so a file's
    header leaves in the file's first segment. Sent alone, as a short segment of its own, it halved the rate of 1 MiB
    files (wrk -c10: 1,970 -> 4,370 a second with it, as lighttpd's TCP_CORK around its header and first chunk)."""
    if i + 1 < len(pieces):
        following = pieces[i + 1]
        if type(following) is FileRegion and following.count:
            return MSG_MORE
    return 0


# Errors that mean "the peer went away" rather than "the server is broken".
GONE = (ConnectionError, TimeoutError, BlockingIOError)


def peer_name(peer: Address) -> str:
    try:
        return format_address(peer)
    except (TypeError, IndexError):
        return str(peer)


def protocol_failed(peer: Address, where: str, exc: BaseException) -> None:
    """A protocol raised: log one line (the traceback at debug level) -- only this connection pays."""
    log.error("%s: protocol error in %s: %s: %s; connection closed", peer_name(peer), where, type(exc).__name__, exc)
    log.debug("traceback", exc_info=exc)


def close_region(piece: FileRegion) -> None:
    if piece.close:
        try:
            os.close(piece.fd)
        except OSError:
            pass


def release(pieces: tuple) -> None:
    """Close the files of pieces that will never be sent."""
    for piece in pieces:
        if isinstance(piece, FileRegion):
            close_region(piece)


def answer_datagrams(
    sock: socket.socket, protocol: DatagramProtocol, batch: DatagramBatch | None = None, most: int = 64
) -> None:
    """Read up to ``most`` waiting datagrams from a nonblocking socket and send the protocol's answers -- with
    ``batch``, many per system call (engine/mmsg.py); without, one recvfrom and one sendto each."""
    peers = batch.peers if batch is not None else {}
    answered = 0
    while answered < most:
        received = batch.receive() if batch is not None else _receive_one(sock)
        if received:
            protocol.tick(time.time())
        replies = []
        for data, source in received:
            peer = source if batch is None else peers.get(source) or batch.peer(source)
            try:
                answers = protocol.datagram_received(data, peer)
            except Exception as exc:
                protocol_failed(peer, "datagram_received", exc)
                continue
            for out in answers:
                replies.append((out, source))
        if replies:
            if batch is not None:
                batch.send(replies)
            else:
                _send_each(sock, replies)
        if len(received) < (SLOTS if batch is not None else 1):
            return
        answered += len(received)


def _receive_one(sock: socket.socket) -> list[tuple[bytes, Address]]:
    try:
        return [sock.recvfrom(65535)]
    except (BlockingIOError, InterruptedError):
        return []
    except OSError as exc:  # an ICMP error from an earlier send surfaces here: not ours to worry about
        log.debug("udp: %s", exc)
        return []


def _send_each(sock: socket.socket, replies: list[tuple[bytes, Address]]) -> None:
    for out, peer in replies:
        try:
            sock.sendto(out, peer)
        except OSError as exc:  # best effort, as UDP is: a full buffer drops the reply
            log.debug("udp %s: reply dropped: %s", peer_name(peer), exc)
