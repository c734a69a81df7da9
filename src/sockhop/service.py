"""What a service tells the face about itself, once.

A service package (echo, web, dns, mail) exports one :class:`Service`: its name, its options (added to a parser it
is handed), its default port, how it builds listeners from parsed options, and what ``sockhop up`` runs of it.
The face -- ``sockhop serve``, ``sockhop up``, ``sockhop.toml`` -- reads these descriptions and serves them all
through one serving path (:mod:`sockhop.serving`); a service never imports the face. What a service needs from the
face while it builds (sockets bound for its endpoints, the certificates given) comes in through an
:class:`Opener`, so the arrows point one way: face -> service -> engine -> net.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sockhop.engine.listener import Listener
    from sockhop.engine.protocol import Job
    from sockhop.engine.tls import ServerCertificates

Factory = Callable[[], Any]  # makes a StreamProtocol or a DatagramProtocol


class Opener(Protocol):
    """Listening sockets for the endpoints the options name, handed to a service while it builds.

    ``serve`` binds what ``--listen`` and ``--listen-tls`` say (or claims the sockets systemd or a restarting master
    handed over); ``up`` is the same with its own endpoints. A service never parses endpoints itself.
    """

    def open(
        self,
        factory: Factory,
        kind: socket.SocketKind = socket.SOCK_STREAM,
        *,
        busy: bytes = b"",
        alpn: tuple[str, ...] = (),
        tls_factory: Factory | None = None,
    ) -> list[Listener]:
        """A listener per ``--listen`` address serving ``factory``; for streams, one per ``--listen-tls`` address
        serving ``tls_factory`` (default ``factory``) inside TLS with the given certificates and ALPN."""
        ...

    def open_at(self, endpoints: Sequence[str], factory: Factory, *, busy: bytes = b"") -> list[Listener]:
        """A TCP listener on each of ``endpoints`` (as people write them: a service's own option, such as mail's
        ``--listen-submission``) serving ``factory``."""
        ...

    def open_pair(
        self, datagram: Factory, stream: Factory, *, busy: bytes = b"", alpn: tuple[str, ...] = ()
    ) -> list[Listener]:
        """UDP and TCP on the same port for every ``--listen`` address (DNS clients expect one port for both);
        ``--listen-tls`` addresses serve ``stream`` inside TLS."""
        ...

    def certificates(self, alpn: tuple[str, ...] = ()) -> ServerCertificates | None:
        """The server certificates given (``--tls-cert``/``--tls-key``), or None."""
        ...

    def starttls(self, factory: Factory) -> Factory:
        """``factory`` behind a TLS layer that waits in plaintext for the protocol's :data:`START_TLS` (when
        certificates are given; else ``factory`` itself)."""
        ...

    def at_stop(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the server has stopped (flushing a log)."""
        ...


@dataclass(frozen=True)
class Command:
    """A client command a service brings (``get``, ``send``, ``resolve``, ``mailbox``)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


@dataclass(frozen=True)
class UpContext:
    """What ``sockhop up`` tells each service: where it runs and where its data lives."""

    host: str
    data: Path  # where services keep what they store (mail, certificates, the zone)
    tls: bool = False  # TLS twins are served, with the local CA's certificate
    quiet: bool = False  # -q: no line per request, query and message
    command: str = "sockhop"  # how the person at the terminal runs sockhop (.venv/bin/sockhop when not on PATH)
    user: str | None = None  # --user: services will run as this user, who can read only what is in the data folder

    def url_host(self) -> str:
        from sockhop.net.addresses import format_host

        return format_host(self.host)


@dataclass(frozen=True)
class UpPlan:
    """One server a service runs under ``sockhop up``: the ``sockhop serve SERVICE`` arguments it stands for (the
    face adds ``--listen`` and, for ``tls``, ``--listen-tls`` with the local CA's certificate) and the lines that
    show it working."""

    argv: Sequence[str]
    try_lines: Sequence[str]
    tls: bool = True  # has a TLS twin on the service's twin port


@dataclass(frozen=True)
class Twin:
    """The TLS twin ``sockhop up`` serves beside a stream service: its port, the ALPN it offers, and how to try
    it (``{host}``, ``{ca}`` and ``{sockhop}`` are filled in)."""

    port: int
    alpn: tuple[str, ...] = ()
    try_line: str = ""


@dataclass(frozen=True)
class Problem:
    """A mistake ``sockhop check`` reports: the option (its long name) and what is wrong, in one line."""

    option: str
    message: str


@dataclass(frozen=True)
class Service:
    """One service, as the face sees it. See the module's docstring, and docs/architecture.md for how to add one."""

    name: str  # `sockhop serve NAME`, [services.NAME] in sockhop.toml, the service label in metrics
    help: str  # one line for `sockhop serve --help`
    default_port: int  # unprivileged: the default endpoint is 127.0.0.1:PORT
    add_arguments: Callable[[argparse.ArgumentParser], None]  # its own options; the engine's are the face's
    open: Callable[[argparse.Namespace, Opener], list[Listener]]  # from parsed options to listeners
    up: Callable[[UpContext], list[UpPlan]]  # what `sockhop up` runs of it
    twin: Twin | None = None  # `sockhop up`'s TLS twin
    commands: tuple[Command, ...] = ()
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)  # engine options it defaults otherwise
    folders: Callable[[argparse.Namespace], list[Path]] = lambda args: []  # what it writes (handed to --user)
    check: Callable[[argparse.Namespace], list[Problem]] = lambda args: []  # what `check` finds beyond values
    #: What it listens on for these options: TCP, UDP or both on each --listen endpoint (`check` binds them).
    kinds: Callable[[argparse.Namespace], tuple[socket.SocketKind, ...]] = lambda args: (socket.SOCK_STREAM,)
    #: Background work that runs inside the server for these options (a queue runner, a zone refresher): engine
    #: Jobs, started when it serves and stopped gracefully with it (docs/architecture.md, "When no bytes arrive").
    jobs: Callable[[argparse.Namespace], list[Job]] = lambda args: []
    #: The Maildir the dashboard's inbox shows for these options (mail's), or None.
    inbox: Callable[[argparse.Namespace], Path | None] = lambda args: None

    @property
    def default_listen(self) -> str:
        return f"127.0.0.1:{self.default_port}"
