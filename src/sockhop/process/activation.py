"""Listening sockets handed to this process instead of bound by it: by systemd (socket activation) or by the sockhop
master it replaces (a SIGUSR2 restart, see restart.py).
"""

from __future__ import annotations

import ipaddress
import os
import socket

from sockhop.errors import AddressError
from sockhop.net.addresses import Endpoint
from sockhop.net.listeners import describe_socket

#: The first descriptor a service manager passes (sd_listen_fds(3): SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Set by a sockhop restarting itself (SIGUSR2): the descriptor numbers of the listening sockets it hands over.
SOCKHOP_FDS = "SOCKHOP_FDS"


class InheritedSockets:
    """Listening sockets this process was handed instead of binding its own.

    Two givers: systemd socket activation (``LISTEN_PID`` is this process, ``LISTEN_FDS`` sockets from fd 3 on, in
    the order of the unit's ``Listen*=`` lines) and a sockhop master restarting itself on SIGUSR2 (``SOCKHOP_FDS``,
    the descriptor numbers it kept open across exec). The variables are removed from the environment once read, as
    sd_listen_fds(unset_environment=1) does, so children started later do not take them for their own.

    Each --listen endpoint claims the inherited sockets of its kind on its port (port 0: the next unclaimed one), so
    the command line reads the same whether the sockets are bound here or handed over.
    """

    def __init__(self, socks: list[socket.socket], giver: str) -> None:
        self.socks = socks
        self.giver = giver

    @classmethod
    def from_environment(cls, environ=os.environ) -> InheritedSockets:
        fds: list[int] = []
        giver = ""
        if environ.get("LISTEN_FDS") and environ.get("LISTEN_PID") == str(os.getpid()):
            try:
                fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(environ["LISTEN_FDS"])))
            except ValueError:
                raise AddressError(f"LISTEN_FDS is not a number: {environ['LISTEN_FDS']!r}") from None
            giver = "socket activation (LISTEN_FDS)"
        elif environ.get(SOCKHOP_FDS):
            try:
                fds = [int(fd) for fd in environ[SOCKHOP_FDS].split(",")]
            except ValueError:
                raise AddressError(f"{SOCKHOP_FDS} is not a list of numbers: {environ[SOCKHOP_FDS]!r}") from None
            giver = "the previous sockhop (SOCKHOP_FDS)"
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", SOCKHOP_FDS):
            environ.pop(name, None)
        socks = []
        for fd in fds:
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise AddressError(f"descriptor {fd} from {giver} is not a socket: {exc.strerror}") from None
            sock.set_inheritable(False)
            socks.append(sock)
        return cls(socks, giver)

    def __bool__(self) -> bool:
        return bool(self.socks) or bool(self.giver)

    def claim(self, endpoint: Endpoint, kind: socket.SocketKind) -> list[socket.socket]:
        """The inherited sockets that stand for ``endpoint`` (removed from the pool). One plain line if none."""
        mine = [s for s in self.socks if s.type == kind and _matches(s, endpoint)]
        if endpoint.port == 0:
            mine = mine[:1]
        if not mine:
            kinds = "tcp" if kind == socket.SOCK_STREAM else "udp"
            have = ", ".join(describe_socket(s.getsockname(), s.type) for s in self.socks) or "none left"
            raise AddressError(
                f"{self.giver} passed no {kinds} socket for {endpoint} (passed: {have}); make --listen match the "
                "sockets it listens on"
            )
        for sock in mine:
            self.socks.remove(sock)
        return mine


def _matches(sock: socket.socket, endpoint: Endpoint) -> bool:
    host, port = sock.getsockname()[:2]
    if endpoint.port and port != endpoint.port:
        return False
    if not endpoint.host:
        return True
    try:
        return ipaddress.ip_address(endpoint.host) == ipaddress.ip_address(host)
    except ValueError:  # a name such as localhost: the port decides
        return True


_inherited: list[InheritedSockets] = []


def inherited() -> InheritedSockets:
    """The sockets this process was handed (read from the environment once)."""
    if not _inherited:
        _inherited.append(InheritedSockets.from_environment())
    return _inherited[0]
