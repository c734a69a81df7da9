"""Clients for the engine suite, on real loopback sockets, and looks into /proc at the server under test."""

from __future__ import annotations

import os
import selectors
import socket
import time
from pathlib import Path


def connect(addr: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(addr)
    return sock


def exchange_many(addr: tuple[str, int], payloads: list[bytes], timeout: float = 60.0) -> list[bytes]:
    """Run one echo conversation per payload, all at once: send it, half-close, read to EOF. Single-threaded, with
    nonblocking sockets, so no client ever waits on its own reading to write."""
    sel = selectors.DefaultSelector()
    received: list[bytearray] = [bytearray() for _ in payloads]
    state = {}
    for i, payload in enumerate(payloads):
        sock = connect(addr)
        sock.setblocking(False)
        state[sock] = [i, memoryview(payload)]
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    open_count = len(payloads)
    try:
        while open_count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{open_count} conversations unfinished")
            for key, events in sel.select(left):
                sock = key.fileobj
                i, out = state[sock]
                if events & selectors.EVENT_WRITE:
                    if out:
                        try:
                            sent = sock.send(out[:262144])
                            state[sock][1] = out = out[sent:]
                        except BlockingIOError:
                            pass
                    if not out:
                        sock.shutdown(socket.SHUT_WR)
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        continue
                    if data:
                        received[i] += data
                    else:
                        sel.unregister(sock)
                        sock.close()
                        open_count -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return [bytes(r) for r in received]


def echo_once(addr: tuple[str, int], payload: bytes = b"ping\n", timeout: float = 10.0) -> bytes:
    with connect(addr, timeout) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def read_until_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- the server process tree, from /proc ----------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process ended while the tree was walked (a fork child finishing its connection)
        return kids
    for task in tasks:
        try:
            kids.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return kids


def tree(pid: int) -> list[int]:
    pids = [pid]
    for kid in children(pid):
        pids.extend(tree(kid))
    return pids


def state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2]


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def socket_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
