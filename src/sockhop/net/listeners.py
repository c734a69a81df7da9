"""Opening listening sockets: socket(), bind(), listen() -- with the mistakes people make turned into one line."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from sockhop.errors import AddressError, AddressInUseError, PrivilegedPortError
from sockhop.net.addresses import Endpoint, resolve
from sockhop.net.ports import unprivileged_start

#: The first descriptor a service manager passes (sd_listen_fds(3): SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Set by a sockhop restarting itself (SIGUSR2): the descriptor numbers of the listening sockets it hands over.
SOCKHOP_FDS = "SOCKHOP_FDS"

# The kernel caps this at net.core.somaxconn; asking for more costs nothing and lets a tuned host use it.
BACKLOG = 4096


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _describe(family: socket.AddressFamily, sockaddr: tuple, kind: socket.SocketKind) -> str:
    host, port = sockaddr[0], sockaddr[1]
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    return f"{where} ({'tcp' if kind == socket.SOCK_STREAM else 'udp'})"


def open_socket(
    family: socket.AddressFamily,
    sockaddr: tuple,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    *,
    dual_stack: bool = False,
    reuse_port: bool = False,
    backlog: int = BACKLOG,
) -> socket.socket:
    """One bound (and, for TCP, listening) socket. Raises an :class:`AddressError` that says what to do."""
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Let a restarted server bind while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            where = _describe(family, sockaddr, kind)
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(
                    f"address {where} is already in use: another program listens there; stop it or pick another port"
                ) from None
            if exc.errno == errno.EACCES and sockaddr[1] < unprivileged_start():
                raise PrivilegedPortError(
                    f"port {sockaddr[1]} is privileged (below {unprivileged_start()}): run as root, grant the program "
                    f"CAP_NET_BIND_SERVICE, or listen on a port above 1023 (such as {sockaddr[1] + 8000})"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise AddressError(f"cannot listen on {where}: that is not an address of this machine") from None
            raise AddressError(f"cannot listen on {where}: {exc.strerror}") from None
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        return sock
    except BaseException:
        sock.close()
        raise


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
            have = ", ".join(_describe(s.family, s.getsockname(), s.type) for s in self.socks) or "none left"
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


def open_listeners(
    endpoints: list[Endpoint], kind: socket.SocketKind = socket.SOCK_STREAM, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Open a socket for every address the endpoints name.

    An endpoint with no host listens on every interface: one IPv6 socket that also takes IPv4 (dual stack) where
    the machine has IPv6, else 0.0.0.0. A host name with several addresses (``localhost``) gets one socket each,
    all on the same port -- the first one's, when the port is 0. The caller closes them.

    Under socket activation (or a SIGUSR2 restart) the sockets are not opened but taken from those inherited.
    """
    socks: list[socket.socket] = []
    given = inherited()
    try:
        for endpoint in endpoints:
            if given:
                socks.extend(given.claim(endpoint, kind))
                continue
            if not endpoint.host:
                if _has_ipv6():
                    socks.append(
                        open_socket(
                            socket.AF_INET6, ("::", endpoint.port), kind, dual_stack=True, reuse_port=reuse_port
                        )
                    )
                else:
                    socks.append(open_socket(socket.AF_INET, ("0.0.0.0", endpoint.port), kind, reuse_port=reuse_port))
                continue
            port = endpoint.port
            for family, sockaddr in resolve(endpoint, kind, passive=True):
                sockaddr = (sockaddr[0], port, *sockaddr[2:])
                sock = open_socket(family, sockaddr, kind, reuse_port=reuse_port)
                socks.append(sock)
                port = sock.getsockname()[1]
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
