"""What the engine serves: a listening socket and how to make the protocol for what arrives on it."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sockhop.engine.protocol import DatagramProtocol, StreamProtocol
from sockhop.net.addresses import format_address


@dataclass(frozen=True)
class Listener:
    """An open listening socket and how to make the protocol for what arrives on it.

    ``factory`` returns a :class:`StreamProtocol` for a SOCK_STREAM socket (called once per connection) or a
    :class:`DatagramProtocol` for a SOCK_DGRAM socket (called once per socket and worker). ``busy`` is sent to a
    client refused because the server is at its connection limit (an SMTP 421, an HTTP 503), then it is closed.
    ``reload``, if given, is called on SIGHUP -- from the serving loop, never inside the signal handler -- in every
    process that serves the listener (a prefork master and each of its workers), so a service can re-read its
    files (DNS zones) while it serves. Listeners sharing one ``reload`` have it called once.
    """

    sock: socket.socket
    factory: Callable[[], StreamProtocol | DatagramProtocol]
    busy: bytes = b""
    name: str = ""
    tls: bool = False  # the factory wraps its protocol in TLS (only for describing it)
    reload: Callable[[], None] | None = None
    refused: Callable[[], None] | None = None  # called per client refused at the connection limit (metrics)

    @property
    def is_stream(self) -> bool:
        return self.sock.type == socket.SOCK_STREAM

    def describe(self) -> str:
        kind = "tcp" if self.is_stream else "udp"
        if self.tls:
            kind = "tls"
        return f"{self.name or kind} {kind} {format_address(self.sock.getsockname())}"


def with_reload(listeners: list[Listener], hook: Callable[[], None]) -> list[Listener]:
    """The listeners with ``hook`` added to their SIGHUP reload (a TLS listener's certificates stay reloaded too):
    one combined hook for all of them, so each is called once."""
    hooks = [hook]
    for listener in listeners:
        if listener.reload is not None and listener.reload not in hooks:
            hooks.append(listener.reload)

    def reload() -> None:
        for each in hooks:
            each()

    return [dataclasses.replace(listener, reload=reload) for listener in listeners]
