"""The one serving path: from parsed options and a service's listeners to a running, restartable server.

``sockhop serve SERVICE``, ``sockhop up`` and each process of ``sockhop up --config`` (which runs ``sockhop serve``)
all go through :func:`serve`: the outer layers every listener gets (PROXY protocol, metrics), the admin listener,
the privilege drop, the engine, the lines that say where it listens, SIGUSR2 restarts, and the goodbye. The
options that steer it are added to every parser by the functions here, so a flag means the same everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sockhop.console import say
from sockhop.engine import MODELS, Job, Limits, Listener, make_server
from sockhop.engine.limits import default_workers
from sockhop.errors import AddressInUseError, UsageError
from sockhop.net.addresses import Endpoint, format_address, parse_endpoint
from sockhop.net.listeners import open_listeners
from sockhop.options import positive_float, positive_int
from sockhop.process.activation import inherited
from sockhop.service import Factory

if TYPE_CHECKING:
    from sockhop.dashboard.app import DashboardServer
    from sockhop.engine.metrics import AdminServer
    from sockhop.engine.tls import ServerCertificates

log = logging.getLogger("sockhop")

EPHEMERAL_TRIES = 20  # port 0 for a UDP and TCP pair: find one free for both


# -- the options ----------------------------------------------------------------------------------------------------
def add_listen_options(parser: argparse.ArgumentParser, default_listen: str) -> None:
    """Where a service listens, with or without TLS, and who may prefix a PROXY header."""
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="host:port, [v6addr]:port, :port (every interface, IPv4 and IPv6) or host:service; a host alone takes "
        f"the default port; repeatable (default {default_listen})",
    )
    parser.set_defaults(default_listen=default_listen)
    parser.add_argument(
        "--listen-tls", action="append", metavar="ENDPOINT", help="listen here with TLS (needs --tls-cert/--tls-key)"
    )
    parser.add_argument(
        "--tls-cert", action="append", metavar="FILE", help="PEM certificate chain; repeat with --tls-key for SNI"
    )
    parser.add_argument("--tls-key", action="append", metavar="FILE", help="PEM private key of the --tls-cert before")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: let several independent sockhop processes listen on the same port",
    )
    parser.add_argument(
        "--proxy-protocol",
        action="append",
        metavar="ADDR|NET",
        help="expect a PROXY protocol v1/v2 header (HAProxy's send-proxy) from this load balancer address or "
        "network, so logs show the real client; repeatable. Others are served as they are, and refused if they "
        "send a header",
    )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """How the engine serves: the model and its limits. ``serve`` and ``up`` take the same."""
    parser.add_argument("--model", choices=list(MODELS), default="eventloop", help="how to serve many clients")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=0,
        help=f"threads (pool) or processes (prefork); default {default_workers()}",
    )
    parser.add_argument(
        "--deferred-threads",
        type=positive_int,
        default=Limits.deferred_threads,
        metavar="N",
        help="threads for blocking work a protocol hands off the event loop (Reply.then; eventloop and prefork; "
        f"default {Limits.deferred_threads}); mail's group commit has a thread of its own",
    )
    parser.add_argument("--idle-timeout", type=positive_float, default=60.0, metavar="S", help="default 60")
    parser.add_argument("--max-connections", type=positive_int, default=1024, metavar="N", help="default 1024")
    parser.add_argument(
        "--grace", type=positive_float, default=10.0, metavar="S", help="time to finish on stop (default 10)"
    )
    parser.add_argument(
        "--tls-handshake-timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="time a TLS client gets for its whole handshake (default 10)",
    )


def add_production_options(parser: argparse.ArgumentParser) -> None:
    """What concerns a whole server rather than one service."""
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="started as root: bind (privileged ports too), then become this user and its group for good",
    )
    parser.add_argument(
        "--admin",
        metavar="ENDPOINT",
        help="serve /metrics (Prometheus text format) and /healthz here, such as 127.0.0.1:9100 (default: off)",
    )
    parser.add_argument(
        "--dashboard",
        metavar="ENDPOINT",
        help="serve the dashboard here (the inbox, live counters and activity, its JSON API), such as "
        "127.0.0.1:8025 (default: off; sockhop up: on, at 8025). Not on loopback only with a password",
    )
    parser.add_argument(
        "--dashboard-password-file",
        metavar="FILE",
        help="the dashboard asks for this password (the file's first line; HTTP Basic, any user name)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: sockhop's own lines (start-up, errors, -v) as one JSON object each; the access and query logs "
        "keep their own formats (Combined Log Format, one line per query), which log tools already parse",
    )
    parser.add_argument(
        "--allow-root",
        action="store_true",
        help="serve as root on a privileged port without --user (refused otherwise)",
    )
    parser.add_argument(
        "--pid-file",
        metavar="FILE",
        help="write the serving master's process id here (rewritten by the new master after a SIGUSR2 restart)",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        grace=args.grace,
        workers=args.workers,
        deferred_threads=args.deferred_threads,
    )


# -- opening a service's listeners ----------------------------------------------------------------------------------
def certificates_from(args: argparse.Namespace, alpn: tuple[str, ...] = ()) -> ServerCertificates | None:
    """The server certificates the --tls-cert/--tls-key pairs describe (SNI picks among several), or None.
    TLSLayer.factory takes them; SIGHUP re-reads them."""
    from sockhop.engine.tls import ServerCertificates

    certs, keys = args.tls_cert or [], args.tls_key or []
    if len(certs) != len(keys):
        raise UsageError("give one --tls-key for every --tls-cert, in the same order")
    if not certs:
        return None
    return ServerCertificates(list(zip(certs, keys, strict=True)), alpn=alpn)


class ArgsOpener:
    """The :class:`sockhop.service.Opener` of the command line: binds what --listen and --listen-tls name (or
    claims the sockets systemd or a restarting master handed over)."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.name = name
        self.stops: list[Callable[[], None]] = []
        self._certificates: dict[tuple[str, ...], ServerCertificates | None] = {}
        proxy_wrapper(args)  # a wrong --proxy-protocol is one line before anything is bound

    def certificates(self, alpn: tuple[str, ...] = ()) -> ServerCertificates | None:
        if alpn not in self._certificates:
            self._certificates[alpn] = certificates_from(self.args, alpn)
        return self._certificates[alpn]

    def starttls(self, factory: Factory) -> Factory:
        from sockhop.engine.tls import TLSLayer

        certificates = self.certificates()
        if certificates is None:
            return factory
        return TLSLayer.factory(
            certificates, factory, implicit=False, handshake_timeout=self.args.tls_handshake_timeout
        )

    def at_stop(self, action: Callable[[], None]) -> None:
        self.stops.append(action)

    def endpoints(self, proto: str) -> list[Endpoint]:
        # Only --listen-tls given: TLS only. Neither: the service's default endpoint.
        texts = self.args.listen or ([] if self.args.listen_tls else [self.args.default_listen])
        default_port = parse_endpoint(self.args.default_listen, proto=proto).port  # a host alone: the service's port
        return [parse_endpoint(text, proto=proto, default_port=default_port) for text in texts]

    def _bind(self, endpoints: list[Endpoint], kind: socket.SocketKind) -> list[socket.socket]:
        return open_listeners(endpoints, kind, reuse_port=self.args.reuse_port, given=inherited())

    def open(
        self,
        factory: Factory,
        kind: socket.SocketKind = socket.SOCK_STREAM,
        *,
        busy: bytes = b"",
        alpn: tuple[str, ...] = (),
        tls_factory: Factory | None = None,
    ) -> list[Listener]:
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        tls_texts = (self.args.listen_tls or []) if kind == socket.SOCK_STREAM else []
        certificates = self.certificates(alpn)
        if tls_texts and certificates is None:
            raise UsageError("--listen-tls needs a certificate: add --tls-cert FILE --tls-key FILE")
        reload = certificates.reload if certificates is not None else None
        listeners = [
            Listener(sock, factory, busy=busy, name=self.name, reload=reload)
            for sock in self._bind(self.endpoints(proto), kind)
        ]
        if tls_texts:
            listeners += self._open_tls(tls_factory or factory, certificates, busy, listeners)
        return listeners

    def open_at(self, endpoints: Sequence[str], factory: Factory, *, busy: bytes = b"") -> list[Listener]:
        parsed = [parse_endpoint(text) for text in endpoints]
        reload = certificates.reload if (certificates := self.certificates()) is not None else None
        return [
            Listener(sock, factory, busy=busy, name=self.name, reload=reload)
            for sock in self._bind(parsed, socket.SOCK_STREAM)
        ]

    def _open_tls(
        self, factory: Factory, certificates: ServerCertificates | None, busy: bytes, opened: list[Listener]
    ) -> list[Listener]:
        from sockhop.engine.tls import TLSLayer

        assert certificates is not None
        try:
            endpoints = [parse_endpoint(text) for text in self.args.listen_tls]
            socks = self._bind(endpoints, socket.SOCK_STREAM)
        except BaseException:
            close_all(opened)
            raise
        wrapped = TLSLayer.factory(certificates, factory, handshake_timeout=self.args.tls_handshake_timeout)
        return [Listener(s, wrapped, name=self.name, tls=True, reload=certificates.reload) for s in socks]

    def open_pair(
        self, datagram: Factory, stream: Factory, *, busy: bytes = b"", alpn: tuple[str, ...] = ()
    ) -> list[Listener]:
        listeners: list[Listener] = []
        plain = self.args.listen or ([] if self.args.listen_tls else [self.args.default_listen])
        try:
            for endpoint in self.endpoints("udp") if plain else []:
                listeners += self._pair_on(endpoint, datagram, stream, busy)
            if self.args.listen_tls:
                certificates = self.certificates(alpn)
                if certificates is None:
                    raise UsageError("--listen-tls needs a certificate: add --tls-cert FILE --tls-key FILE")
                listeners += self._open_tls(stream, certificates, busy, listeners)
        except BaseException:
            close_all(listeners)
            raise
        return listeners

    def _pair_on(self, endpoint: Endpoint, datagram: Factory, stream: Factory, busy: bytes) -> list[Listener]:
        """UDP, then TCP on the port UDP got; for port 0, another try when that port is taken for TCP."""
        for attempt in range(EPHEMERAL_TRIES):
            udp = self._bind([endpoint], socket.SOCK_DGRAM)
            port = udp[0].getsockname()[1]
            try:
                tcp = self._bind([dataclasses.replace(endpoint, port=port)], socket.SOCK_STREAM)
            except AddressInUseError:
                for sock in udp:
                    sock.close()
                if endpoint.port != 0 or attempt == EPHEMERAL_TRIES - 1:
                    raise
                continue
            return [Listener(s, datagram, name=self.name) for s in udp] + [
                Listener(s, stream, busy=busy, name=self.name) for s in tcp
            ]
        raise AssertionError("unreachable")


def close_all(listeners: Sequence[Listener]) -> None:
    for listener in listeners:
        listener.sock.close()


def open_endpoints(
    texts: Sequence[str], kind: socket.SocketKind, *, default_port: int | None = None
) -> list[socket.socket]:
    """Bind what ``texts`` name (``sockhop check``: can they be?); the caller closes them."""
    proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
    return open_listeners([parse_endpoint(text, proto=proto, default_port=default_port) for text in texts], kind)


def close_all_sockets(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# -- the serving path -----------------------------------------------------------------------------------------------
def _unwrapped(factory: Callable) -> Callable:
    return factory


def proxy_wrapper(args: argparse.Namespace) -> Callable[[Callable], Callable]:
    """What --proxy-protocol makes of a stream factory: the PROXY layer outermost (the header precedes TLS)."""
    texts = getattr(args, "proxy_protocol", None)
    if not texts:
        return _unwrapped
    from sockhop.engine.proxy import ProxyLayer, parse_sources

    sources = parse_sources(texts)  # a mistake is one line, before anything is bound
    return lambda factory: ProxyLayer.factory(factory, sources)


def outer_layers(args: argparse.Namespace, listeners: list[Listener], model: str) -> list[Listener]:
    """The layers every listener gets around whatever factory its service settled on: PROXY protocol outermost on
    streams (the header precedes TLS), and counting for --admin around everything (what crosses the socket) -- or,
    for the dashboard alone, only connections and the services' results."""
    proxied = proxy_wrapper(args)
    metrics = None
    if args.admin or getattr(args, "dashboard", None):  # the dashboard shows the counters too
        from sockhop.engine.metrics import Metrics

        metrics = Metrics.get()
    wrapped = []
    for listener in listeners:
        factory = proxied(listener.factory) if listener.is_stream else listener.factory
        refused = listener.refused
        if metrics is not None:
            if args.admin:
                factory = metrics.metered(factory, listener.name, model, listener.is_stream)
            else:  # the dashboard alone: connections and results, no layer counting every read's bytes
                factory = metrics.results_only(factory, listener.name, model, listener.is_stream)
            refused = metrics.refusals(listener.name, model)
        wrapped.append(dataclasses.replace(listener, factory=factory, refused=refused))
    return wrapped


def open_admin(args: argparse.Namespace) -> AdminServer | None:
    """The --admin listener (bound now, with the others, before any privilege drop), or None."""
    if not args.admin:
        return None
    from sockhop.engine.metrics import AdminServer, Metrics

    (sock,) = open_listeners([parse_endpoint(args.admin)], socket.SOCK_STREAM, given=inherited())[:1]
    return AdminServer(sock, Metrics.get())


def open_dashboard(
    args: argparse.Namespace, listeners: list[Listener], model: str, inbox: Path | None
) -> DashboardServer | None:
    """The --dashboard listener (bound now, with the others), or None. Anywhere but loopback it needs a password."""
    if not getattr(args, "dashboard", None):
        return None
    import ipaddress

    from sockhop.dashboard.api import Api
    from sockhop.dashboard.app import Dashboard, DashboardServer, read_password
    from sockhop.dashboard.inbox import Inbox
    from sockhop.dashboard.live import Hub
    from sockhop.engine.metrics import Metrics
    from sockhop.linelog import open_activity_feed

    password = read_password(args.dashboard_password_file) if args.dashboard_password_file else None
    try:
        (sock,) = open_listeners([parse_endpoint(args.dashboard)], socket.SOCK_STREAM, given=inherited())[:1]
    except AddressInUseError as exc:  # Mailpit or MailHog may hold 8025 already
        raise AddressInUseError(f"{str(exc).rstrip('.')} (the dashboard: --dashboard ENDPOINT, or --no-dashboard "
                                "for sockhop up)") from None  # fmt: skip
    host = sock.getsockname()[0]
    if password is None and not ipaddress.ip_address(host.partition("%")[0]).is_loopback:
        sock.close()
        raise UsageError(f"the dashboard on {args.dashboard} would show everyone your mail: add "
                         "--dashboard-password-file FILE, or listen on loopback (127.0.0.1:8025)")  # fmt: skip
    services: dict[str, list[str]] = {}
    for listener in listeners:
        services.setdefault(listener.name or "?", []).append(listener.describe().partition(" ")[2])
    workers = f", {limits_from(args).worker_count()} workers" if model in ("pool", "prefork") else ""
    hub = Hub(Inbox(inbox) if inbox is not None else Inbox("/nonexistent/sockhop-no-mail"), Metrics.get().exposition,
              services, model + workers, open_activity_feed())  # fmt: skip
    return DashboardServer(sock, Dashboard(Api(hub.inbox), hub, password))


def settle_privileges(args: argparse.Namespace, listeners: list[Listener], folders: list[Path]) -> None:
    """Everything is bound: drop to --user now, before anything is served (workers fork later and inherit it).

    Without --user, root is refused only on a privileged port -- the case where someone ran the server as root
    just to get port 80 and would otherwise serve the world as root. Root on an unprivileged port (a container, a
    test run) is left alone; --allow-root accepts the privileged case too.
    """
    from sockhop.net.ports import unprivileged_start
    from sockhop.process.privileges import drop_to, find_account, give_to

    if not args.user:
        privileged = sorted({port for lst in listeners if (port := lst.sock.getsockname()[1]) < unprivileged_start()})
        if os.geteuid() == 0 and privileged and not args.allow_root:
            raise UsageError(
                f"refusing to serve port {privileged[0]} as root: add --user NAME (such as --user www-data) to bind "
                "as root and then serve as that user, or --allow-root if you really mean it"
            )
        return
    account = find_account(args.user)
    if args.admin or getattr(args, "dashboard", None):
        from sockhop.engine.metrics import Metrics

        folders = [*folders, Path(Metrics.get().folder)]
    for folder in folders:
        give_to(account, folder)
    drop_to(account)
    log.info("serving as user %s (uid %d), group %s (gid %d)", account.name, account.uid, account.group, account.gid)


def serve(
    args: argparse.Namespace,
    listeners: list[Listener],
    *,
    model: str,
    folders: Sequence[Path] = (),
    lines: Callable[[Listener], Sequence[str]] = lambda listener: (),
    banner: str = "",
    footer: Sequence[str] = (),
    at_stop: Sequence[Callable[[], None]] = (),
    goodbye: str = "sockhop: stopped",
    jobs: Sequence[Job] = (),
    inbox: Path | None = None,
) -> int:
    """Serve ``listeners`` until stopped: outer layers, --admin, --user, the engine, the announcement (a line per
    listener, then ``lines(listener)`` under it), SIGUSR2 restarts, and ``goodbye`` once everything has stopped.
    The listeners are closed on any failure before serving."""
    # Imported before the drop: the user may not be able to read where Python and sockhop are installed.
    from sockhop.process.restart import serve_restartable

    admin = dashboard = None
    try:
        listeners = outer_layers(args, listeners, model)
        admin = open_admin(args)
        dashboard = open_dashboard(args, listeners, model, inbox)
        settle_privileges(args, listeners, list(folders))
        server = make_server(model, listeners, limits_from(args), list(jobs))
    except BaseException:
        close_all(listeners)
        if admin is not None:
            admin.sock.close()
        if dashboard is not None:
            dashboard.sock.close()
        for action in at_stop:
            action()
        raise
    workers = f", {server.limits.worker_count()} workers" if model in ("pool", "prefork") else ""

    def announce() -> None:
        if banner:
            say(banner)
        for listener in listeners:
            say(f"sockhop: {listener.describe()} (model {model}{workers})")
            for line in lines(listener):
                say(f"    try: {line}")
        if admin is not None:
            admin.start()
            where = format_address(admin.sock.getsockname())
            say(f"sockhop: admin tcp {where} (model {model}{workers})")
            say(f"    try: curl -s http://{where}/metrics | grep ^sockhop_")
        if dashboard is not None:
            dashboard.start()
            where = format_address(dashboard.sock.getsockname())
            say(f"sockhop: dashboard tcp {where} (model eventloop)")
            say(f"    try: curl -s http://{where}/api/v1/messages   # the inbox; open http://{where}/ in a browser")
        for line in footer:
            say(line)

    fds = [listener.sock.fileno() for listener in listeners] + ([admin.sock.fileno()] if admin else [])
    fds += [dashboard.sock.fileno()] if dashboard else []
    try:
        handed_over = serve_restartable(server, fds, announce, pid_file=args.pid_file)
    finally:
        if admin is not None:
            admin.stop()
        if dashboard is not None:
            dashboard.stop()
        for action in at_stop:
            action()
    if goodbye and not handed_over:
        say(goodbye)
    return 0
