"""Datagrams in batches: ``recvmmsg`` and ``sendmmsg``, which the socket module does not offer, through ctypes.

A DNS query costs a UDP server two system calls (recvfrom, sendto), and in CPython each also formats the peer's
address into a string with ``inet_ntop`` -- a fifth of sockhop's own work per query. Here one ``recvmmsg`` takes
every waiting datagram (up to :data:`SLOTS`) and one ``sendmmsg`` sends every answer; peers travel as the kernel's
raw socket addresses, turned into ``(host, port)`` tuples only once per peer (a small cache), for the protocol.

Buffers live in anonymous memory maps: each slot can hold the largest datagram (65,535 bytes), yet only the pages
a datagram touches are ever resident. Where ctypes or the calls are missing, :func:`batch_for` returns None and the
caller keeps to recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import socket
import struct
from collections.abc import Callable

log = logging.getLogger("sockhop.engine")

SLOTS = 32  # datagrams per call
SLOT_SIZE = 65536  # the largest UDP payload fits
NAME_SIZE = 32  # a sockaddr_in6 (28 bytes), padded
PEER_CACHE = 4096  # raw addresses remembered as tuples; then the cache starts over

_MMSG = 64  # sizeof(struct mmsghdr) on 64-bit Linux
_IOVEC = 16  # sizeof(struct iovec)
# struct mmsghdr: msghdr {name ptr, namelen u32 (+4), iov ptr, iovlen u64, control ptr, controllen u64, flags i32
# (+4)}, msg_len u32 (+4). The header is written whole with _HEADER; these two are read and written one by one.
_HEADER = "QI4xQQ"  # name, namelen, iov, iovlen (control, its length and flags stay 0)
_NAMELEN, _LEN = 8, 56  # byte offsets of msg_namelen and msg_len


def _libc() -> tuple[Callable, Callable] | None:
    if struct.calcsize("P") != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recvmmsg.restype = sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _libc()


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class _Side:
    """One direction's memory: the mmsghdr array, its iovecs, the address slots and the data slots."""

    def __init__(self, data_size: int) -> None:
        self.headers = mmap.mmap(-1, SLOTS * _MMSG)
        self.iovecs = mmap.mmap(-1, SLOTS * _IOVEC)
        self.names = mmap.mmap(-1, SLOTS * NAME_SIZE)
        self.data = mmap.mmap(-1, data_size)
        self.headers_at = _address(self.headers)
        self.iovecs_at = _address(self.iovecs)
        self.names_at = _address(self.names)
        self.data_at = _address(self.data)
        for i in range(SLOTS):
            struct.pack_into(_HEADER, self.headers, i * _MMSG, self.names_at + i * NAME_SIZE, NAME_SIZE,
                             self.iovecs_at + i * _IOVEC, 1)  # fmt: skip
        self.u32 = memoryview(self.headers).cast("I")
        self.u64 = memoryview(self.iovecs).cast("Q")
        # Per slot, worked out once: where its lengths sit in u32, its iovec in u64, its address and its data.
        self.slots = [
            ((i * _MMSG + _LEN) >> 2, (i * _MMSG + _NAMELEN) >> 2, 2 * i, i * NAME_SIZE, i * SLOT_SIZE)
            for i in range(SLOTS)
        ]


class DatagramBatch:
    """Receive, answer and send the datagrams waiting on one nonblocking UDP socket. One per socket and thread."""

    def __init__(self, sock: socket.socket) -> None:
        assert _CALLS is not None
        self.recvmmsg, self.sendmmsg = _CALLS
        self.fd = sock.fileno()
        self.inbox = _Side(SLOTS * SLOT_SIZE)
        for i in range(SLOTS):
            struct.pack_into("QQ", self.inbox.iovecs, i * _IOVEC, self.inbox.data_at + i * SLOT_SIZE, SLOT_SIZE)
        # Reset before every receive: the kernel writes each address's real length over msg_namelen.
        self.template = bytes(self.inbox.headers)
        self.outbox = _Side(SLOTS * SLOT_SIZE)
        self.peers: dict[bytes, tuple] = {}

    def peer(self, raw: bytes) -> tuple:
        """``(host, port)`` (IPv6: ``(host, port, flowinfo, scope_id)``), as the socket module reports peers."""
        known = self.peers.get(raw)
        if known is None:
            family = int.from_bytes(raw[:2], "little")
            port = int.from_bytes(raw[2:4], "big")
            if family == socket.AF_INET6:
                flow, scope = struct.unpack_from("!I", raw, 4)[0], struct.unpack_from("I", raw, 24)[0]
                known = (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
            else:
                known = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
            if len(self.peers) >= PEER_CACHE:
                self.peers.clear()
            self.peers[raw] = known
        return known

    def receive(self) -> list[tuple[bytes, bytes]]:
        """The waiting datagrams, up to SLOTS of them, each with its sender's raw address; [] if none wait."""
        inbox = self.inbox
        inbox.headers[:] = self.template
        count = self.recvmmsg(self.fd, inbox.headers_at, SLOTS, socket.MSG_DONTWAIT, None)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EINTR):
                return []
            log.debug("udp: %s", OSError(code, errno.errorcode.get(code, "?")))  # an ICMP error from an earlier send
            return []
        u32, data, names = inbox.u32, inbox.data, inbox.names
        return [
            (data[start : start + u32[length]], names[name : name + u32[name_length]])
            for length, name_length, _, name, start in inbox.slots[:count]
        ]

    def send(self, replies: list[tuple[bytes, bytes]]) -> None:
        """Send each reply to its raw address; best effort, as UDP is: what the socket does not take is dropped."""
        outbox = self.outbox
        u32, u64, data, names = outbox.u32, outbox.u64, outbox.data, outbox.names
        data_at = outbox.data_at
        sent = 0
        while sent < len(replies):
            chunk = replies[sent : sent + SLOTS]
            offset = 0
            for (payload, raw), (_, name_length, iovec, name, _) in zip(chunk, outbox.slots, strict=False):
                end = offset + len(payload)
                data[offset:end] = payload
                u64[iovec] = data_at + offset
                u64[iovec + 1] = end - offset
                names[name : name + len(raw)] = raw
                u32[name_length] = len(raw)
                offset = end
            done = self.sendmmsg(self.fd, outbox.headers_at, len(chunk), socket.MSG_DONTWAIT)
            if done <= 0:
                code = ctypes.get_errno()
                log.debug("udp: %d replies dropped: %s", len(replies) - sent, errno.errorcode.get(code, code))
                return
            sent += done


def batch_for(sock: socket.socket) -> DatagramBatch | None:
    """A batch for ``sock``, or None where recvmmsg/sendmmsg cannot be had."""
    if _CALLS is None:
        return None
    return DatagramBatch(sock)
