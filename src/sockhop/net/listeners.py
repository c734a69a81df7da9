"""Opening listening sockets: socket(), bind(), listen() -- with the mistakes people make turned into one line."""

from __future__ import annotations

import errno
import socket
from typing import Protocol

from sockhop.errors import AddressError, AddressInUseError, PrivilegedPortError
from sockhop.net.addresses import Endpoint, format_address, resolve
from sockhop.net.ports import unprivileged_start

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


def describe_socket(sockaddr: tuple, kind: socket.SocketKind) -> str:
    """``host:port (tcp)``, as error messages name a socket."""
    return f"{format_address(sockaddr)} ({'tcp' if kind == socket.SOCK_STREAM else 'udp'})"


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
            # No Nagle: a reply's last short segment is not held until the client acknowledges the rest (a 1 MiB
            # file waited a round trip for its tail). Accepted connections inherit it: no call per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            where = describe_socket(sockaddr, kind)
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


class Given(Protocol):
    """Sockets handed to this process instead of bound by it (sockhop.process.activation.InheritedSockets)."""

    def __bool__(self) -> bool: ...

    def claim(self, endpoint: Endpoint, kind: socket.SocketKind) -> list[socket.socket]: ...


def open_listeners(
    endpoints: list[Endpoint],
    kind: socket.SocketKind = socket.SOCK_STREAM,
    *,
    reuse_port: bool = False,
    given: Given | None = None,
) -> list[socket.socket]:
    """Open a socket for every address the endpoints name.

    An endpoint with no host listens on every interface: one IPv6 socket that also takes IPv4 (dual stack) where
    the machine has IPv6, else 0.0.0.0. A host name with several addresses (``localhost``) gets one socket each,
    all on the same port -- the first one's, when the port is 0. The caller closes them.

    With ``given`` sockets (socket activation, or a SIGUSR2 restart) the sockets are not opened but claimed from them.
    """
    socks: list[socket.socket] = []
    try:
        for endpoint in endpoints:
            if given is not None and given:
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
