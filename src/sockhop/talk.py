"""The lecture's client side as a tool, as netcat is: connect, send standard input, print what comes back.

TCP: at the end of input the write side is shut (a half-close) and whatever is still in flight is printed until
the server closes; with ``--tls`` the same, the certificate checked against the system's trust store (or
``--cacert``). UDP: each line of input is one datagram; replies are printed as they come, and the tool waits
``wait`` seconds after the last one.

A server that closes without reading what we sent (one at its connection limit, after its busy line) is an error:
what it said is printed, then one line says it did not read our input, and the exit status is 1.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import ssl
import sys
import time

from sockhop.errors import SockhopError
from sockhop.net.addresses import Endpoint, parse_host, parse_port, resolve
from sockhop.tlsclient import describe_certificate_error


class TalkError(SockhopError):
    """The conversation failed."""


class RefusedError(TalkError):
    """The server closed the connection without reading what we sent: at its connection limit, typically, after
    saying so (what it said is printed as any answer is)."""


def endpoint_for(host: str, port: str, *, udp: bool = False) -> Endpoint:
    """Where ``sockhop talk HOST PORT`` connects: ``[::1]`` as endpoints write it, or ``::1``, a name or an IPv4
    address; the port a number or a service name. Every mistake is one line (an AddressError)."""
    return Endpoint(parse_host(host), parse_port(port, "udp" if udp else "tcp"))


def _checked(endpoint: Endpoint) -> Endpoint:
    """A client needs a host, and takes one in brackets as endpoints write it."""
    return Endpoint(parse_host(endpoint.host), endpoint.port)


def _connect(endpoint: Endpoint, kind: socket.SocketKind, timeout: float) -> socket.socket:
    last: OSError | None = None
    for family, sockaddr in resolve(endpoint, kind):
        sock = socket.socket(family, kind)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    where = str(endpoint)
    if isinstance(last, ConnectionRefusedError):
        raise TalkError(f"cannot connect to {where}: connection refused (nothing listens there)")
    if isinstance(last, TimeoutError | socket.timeout):
        raise TalkError(f"cannot connect to {where}: timed out after {timeout:g}s")
    raise TalkError(f"cannot connect to {where}: {last.strerror if last else 'no address'}")


def _handshake(sock: socket.socket, endpoint: Endpoint, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    try:
        tls = context.wrap_socket(sock, server_hostname=endpoint.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise TalkError(f"{endpoint}: {describe_certificate_error(exc)}") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise TalkError(f"{endpoint}: TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from None
    return tls


def talk_tcp(endpoint: Endpoint, stdin: int, stdout, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
    """Copy stdin to the server and the server to stdout at once, never blocking one direction on the other
    (a large input would otherwise deadlock against a server that answers as it reads)."""
    endpoint = _checked(endpoint)
    sock = _connect(endpoint, socket.SOCK_STREAM, timeout)
    if tls is not None:
        sock = _handshake(sock, endpoint, tls, timeout)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        sel.register(stdin, selectors.EVENT_READ)
        sel.unregister(stdin)
        file_input = False  # a pipe or terminal: read it when it is ready
    except (PermissionError, ValueError):
        file_input = True  # a regular file or /dev/null: always ready, and epoll refuses it
    input_open = True
    watching_input = False
    out = b""
    try:
        while True:
            if input_open and not out and file_input:
                out = _read_input(stdin)
                if not out:
                    input_open = False
                    _half_close(sock)  # "no more from me"; keep reading
            # Read input only when the last chunk is sent: memory stays bounded whatever the server does.
            want_input = input_open and not out and not file_input
            if want_input != watching_input:
                if want_input:
                    sel.register(stdin, selectors.EVENT_READ)
                else:
                    sel.unregister(stdin)
                watching_input = want_input
            sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
            for key, events in sel.select():
                if key.fileobj is not sock:
                    out = _read_input(stdin)
                    if not out:
                        input_open = False
                        _half_close(sock)
                    continue
                if events & selectors.EVENT_WRITE and out:
                    try:
                        out = out[sock.send(out) :]
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        _drain(sock, stdout)  # what the server said before it closed: why, often
                        raise _refused(endpoint) from None
                if events & selectors.EVENT_READ:
                    while True:  # TLS may hold decrypted bytes the selector cannot see: read until dry
                        try:
                            data = sock.recv(65536)
                        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            break
                        except ConnectionResetError:  # a close with our bytes unread sends RST, not FIN
                            raise _refused(endpoint) from None
                        except ssl.SSLError as exc:
                            raise TalkError(f"{endpoint}: TLS failed: {exc.reason or exc}") from None
                        if not data:
                            if _closed_unread(sock, out, stdin if input_open else None, probe=tls is None):
                                raise _refused(endpoint)
                            return
                        stdout.write(data)
                        stdout.flush()
                        if tls is None:
                            break
    finally:
        sel.close()
        sock.close()


def _refused(endpoint: Endpoint) -> RefusedError:
    return RefusedError(f"{endpoint}: the server closed the connection without reading our input")


def _drain(sock: socket.socket, stdout) -> None:
    """Print whatever the server sent that is still to be read (the socket is nonblocking)."""
    for _ in range(64):
        try:
            data = sock.recv(65536)
        except (OSError, ssl.SSLError):
            return
        if not data:
            return
        stdout.write(data)
        stdout.flush()


def _closed_unread(sock: socket.socket, pending: bytes, stdin: int | None, *, probe: bool = True) -> bool:
    """At the server's EOF: did it close with our input unread? A close with bytes unread answers them with RST,
    which the socket reports as ECONNRESET after the EOF. Input still waiting to go (a server that closes at once,
    before our first bytes arrived): send it, and a closed server answers RST at once."""
    if _reset(sock):
        return True
    if not probe:  # TLS: the layer above has closed; plaintext cannot go out beneath it
        return False
    if stdin is not None and not pending and select.select([stdin], [], [], 0)[0]:
        pending = _read_input(stdin)
    if not pending:
        return False
    try:
        sock.send(pending[:65536])
    except (BrokenPipeError, ConnectionResetError):
        return True
    except OSError:
        return False
    deadline = time.monotonic() + 0.2  # loopback answers in microseconds, a LAN in a few milliseconds
    while time.monotonic() < deadline:
        if _reset(sock):
            return True
        time.sleep(0.005)
    return False


def _reset(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (errno.ECONNRESET, errno.EPIPE)


def _half_close(sock: socket.socket) -> None:
    """Shut the write side of the TCP connection. Under TLS this goes to the socket beneath (SSLSocket.shutdown
    would drop the TLS state we still read with); sockhop's server treats the FIN as the end of input."""
    socket.socket.shutdown(sock, socket.SHUT_WR)


def _read_input(fd: int) -> bytes:
    return os.read(fd, 65536)


def talk_udp(endpoint: Endpoint, stdin: int, stdout, wait: float = 1.0) -> None:
    endpoint = _checked(endpoint)
    sock = _connect(endpoint, socket.SOCK_DGRAM, wait)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    pending = b""
    input_open = True
    try:
        sel.register(stdin, selectors.EVENT_READ)
    except (PermissionError, ValueError):
        pending = b""
        while chunk := os.read(stdin, 65536):
            pending += chunk
        for line in pending.splitlines(keepends=True):
            _send_datagram(sock, line, endpoint)
        pending = b""
        input_open = False
    quiet_until = time.monotonic() + wait
    try:
        while input_open or time.monotonic() < quiet_until:
            timeout = None if input_open else max(0.0, quiet_until - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.fileobj is sock:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        continue
                    except ConnectionRefusedError:
                        raise TalkError(f"no one is listening on udp {endpoint}") from None
                    stdout.write(data)
                    stdout.flush()
                    quiet_until = time.monotonic() + wait
                else:
                    chunk = os.read(stdin, 65536)
                    if not chunk:
                        sel.unregister(stdin)
                        input_open = False
                        if pending:
                            _send_datagram(sock, pending, endpoint)
                        quiet_until = time.monotonic() + wait
                        continue
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        _send_datagram(sock, line + b"\n", endpoint)
    finally:
        sel.close()
        sock.close()


def _send_datagram(sock: socket.socket, data: bytes, endpoint: Endpoint) -> None:
    try:
        sock.send(data)
    except ConnectionRefusedError:
        raise TalkError(f"no one is listening on udp {endpoint}") from None
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            raise TalkError(f"a line of {len(data)} bytes is too long for one datagram (65507 at most)") from None
        raise TalkError(f"udp {endpoint}: {exc.strerror}") from None


def talk(
    endpoint: Endpoint,
    *,
    udp: bool = False,
    timeout: float = 10.0,
    wait: float = 1.0,
    tls: ssl.SSLContext | None = None,
) -> None:
    stdout = sys.stdout.buffer
    if udp:
        if tls is not None:
            raise TalkError("--tls works over TCP only (DTLS is not supported)")
        talk_udp(endpoint, sys.stdin.fileno(), stdout, wait)
    else:
        talk_tcp(endpoint, sys.stdin.fileno(), stdout, timeout, tls)
