"""Socket activation of a UDP and a TCP socket on one port, done as systemd does it for a unit with ``ListenDatagram=``
and ``ListenStream=`` (which systemd-socket-activate cannot do: it passes streams only).

``python -m tests.prod.activate_pair HOST ARGS...`` binds UDP and TCP on one free port of HOST, puts them at
descriptors 3 and 4 (the unit's order), sets ``LISTEN_FDS=2`` and ``LISTEN_PID`` to its own PID, and execs
``python -m sockhop ARGS`` -- the same process, so LISTEN_PID names it. ``{port}`` in ARGS becomes the port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys


def bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """A listening TCP socket and a UDP socket on the same free port (tried a few times: the UDP port may be taken)."""
    for _ in range(20):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((host, tcp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        tcp.listen(128)
        return udp, tcp
    raise SystemExit("no free port for both UDP and TCP")


def main() -> None:
    host, args = sys.argv[1], sys.argv[2:]
    udp, tcp = bind_pair(host)
    port = tcp.getsockname()[1]
    # Out of the way first (the sockets may well be 3 and 4 already, the other way round), close-on-exec...
    high = [fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 10) for sock in (udp, tcp)]
    udp.close()
    tcp.close()
    for fd, source in zip((3, 4), high, strict=True):  # sd_listen_fds(3): from fd 3 on, in the unit's order
        os.dup2(source, fd)  # ...then at their places, inheritable: exec keeps these two only
    os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()))
    os.execv(sys.executable, [sys.executable, "-m", "sockhop", *(a.replace("{port}", str(port)) for a in args)])


if __name__ == "__main__":
    main()
