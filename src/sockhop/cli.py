"""The ``sockhop`` command: parses arguments, builds a service, hands it to an engine.

Every mistake a user can make ends in one plain line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sockhop import __version__
from sockhop.console import say
from sockhop.engine import MODELS, Limits, Listener, make_server
from sockhop.engine.limits import default_workers
from sockhop.engine.protocol import format_address
from sockhop.errors import SockhopError, UsageError
from sockhop.net.addresses import parse_endpoint
from sockhop.net.listeners import open_listeners
from sockhop.options import positive_float, positive_int
from sockhop.web import cli as web_cli

if TYPE_CHECKING:
    from sockhop.engine.metrics import AdminServer

log = logging.getLogger("sockhop")


# -- shared pieces of the serve commands ----------------------------------------------------------------------------
def add_engine_options(parser: argparse.ArgumentParser, default_listen: str) -> None:
    """The options every server takes: where to listen, which model, and the engine's limits."""
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help=f"host:port, [v6addr]:port, :port (all interfaces) or host:service; repeatable (default {default_listen})",
    )
    parser.set_defaults(default_listen=default_listen)
    parser.add_argument(
        "--listen-tls", action="append", metavar="ENDPOINT", help="listen here with TLS (needs --tls-cert/--tls-key)"
    )
    parser.add_argument(
        "--tls-cert", action="append", metavar="FILE", help="PEM certificate chain; repeat with --tls-key for SNI"
    )
    parser.add_argument("--tls-key", action="append", metavar="FILE", help="PEM private key of the --tls-cert before")
    parser.add_argument("--tls-handshake-timeout", type=positive_float, default=10.0, metavar="S", help="default 10")
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
    add_production_options(parser)


def add_production_options(parser: argparse.ArgumentParser) -> None:
    """The options that concern a whole server rather than one service: ``sockhop up`` takes them too."""
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
        "--log-format", choices=("text", "json"), default="text", help="json: one JSON object per log line"
    )
    parser.add_argument(
        "--allow-root",
        action="store_true",
        help="serve as root on a privileged port without --user (refused otherwise)",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        grace=args.grace,
        workers=args.workers,
        deferred_threads=args.deferred_threads,
    )


def endpoints_from(args: argparse.Namespace, proto: str = "tcp"):
    # Only --listen-tls given: TLS only. Neither: the service's default plain endpoint.
    texts = args.listen or ([] if getattr(args, "listen_tls", None) else [args.default_listen])
    default_port = parse_endpoint(args.default_listen, proto=proto).port  # a host alone means the service's port
    return [parse_endpoint(text, proto=proto, default_port=default_port) for text in texts]


def tls_context_from(args: argparse.Namespace, alpn: tuple[str, ...] = ()):
    """The server certificates the --tls-cert/--tls-key pairs describe (SNI picks among several), as
    :class:`~sockhop.engine.tls.ServerCertificates`: TLSLayer.factory takes them, SIGHUP re-reads them."""
    from sockhop.engine.tls import ServerCertificates

    certs, keys = args.tls_cert or [], args.tls_key or []
    if len(certs) != len(keys):
        raise UsageError("give one --tls-key for every --tls-cert, in the same order")
    return ServerCertificates(list(zip(certs, keys, strict=True)), alpn=alpn)


def with_reload(listeners: list[Listener], hook: Callable[[], None]) -> list[Listener]:
    """The listeners with ``hook`` added to their SIGHUP reload (a TLS listener's certificates stay reloaded too):
    one combined hook for all of them, so each is called once."""
    import dataclasses

    hooks = [hook]
    for listener in listeners:
        if listener.reload is not None and listener.reload not in hooks:
            hooks.append(listener.reload)

    def reload() -> None:
        for each in hooks:
            each()

    return [dataclasses.replace(listener, reload=reload) for listener in listeners]


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


def open_service(
    args: argparse.Namespace,
    factory: Callable,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    *,
    busy: bytes = b"",
    name: str = "",
    alpn: tuple[str, ...] = (),
) -> list[Listener]:
    """Open the listeners the --listen (and, for streams, --listen-tls) options name, for one service."""
    proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
    tls_endpoints = getattr(args, "listen_tls", None) or []
    context = None
    if tls_endpoints and kind == socket.SOCK_STREAM:
        context = tls_context_from(args, alpn)  # checked before anything is bound
    proxy_wrapper(args)  # a wrong --proxy-protocol is one line before anything is bound; run_server applies it
    reuse_port = getattr(args, "reuse_port", False)
    socks = open_listeners(endpoints_from(args, proto), kind, reuse_port=reuse_port)
    listeners = [Listener(sock, factory, busy=busy, name=name) for sock in socks]
    if context is not None:
        from sockhop.engine.tls import TLSLayer

        try:
            tls_endpoints = [parse_endpoint(text, proto=proto) for text in tls_endpoints]
            tls_socks = open_listeners(tls_endpoints, kind, reuse_port=reuse_port)
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            raise
        tls_factory = TLSLayer.factory(context, factory, handshake_timeout=args.tls_handshake_timeout)
        listeners += [Listener(sock, tls_factory, name=name, tls=True, reload=context.reload) for sock in tls_socks]
    return listeners


def settle_privileges(args: argparse.Namespace, listeners: list[Listener]) -> None:
    """Everything is bound: drop to --user now, before anything is served (workers fork later and inherit it).

    Without --user, root is refused only on a privileged port -- the case where someone ran the server as root
    just to get port 80 and would otherwise serve the world as root. Root on an unprivileged port (a container, a
    test run) is left alone; --allow-root accepts the privileged case too.
    """
    from sockhop.engine.privileges import drop_to, find_account, give_to
    from sockhop.net.ports import unprivileged_start

    user = getattr(args, "user", None)
    if not user:
        privileged = sorted({port for lst in listeners if (port := lst.sock.getsockname()[1]) < unprivileged_start()})
        if os.geteuid() == 0 and privileged and not getattr(args, "allow_root", False):
            raise UsageError(
                f"refusing to serve port {privileged[0]} as root: add --user NAME (such as --user www-data) to bind "
                "as root and then serve as that user, or --allow-root if you really mean it"
            )
        return
    account = find_account(user)
    for folder in data_folders(args):
        give_to(account, folder)
    drop_to(account)
    log.info("serving as user %s (uid %d), group %s (gid %d)", account.name, account.uid, account.group, account.gid)


def data_folders(args: argparse.Namespace) -> list[Path]:
    """The folders a service writes to, handed to --user before the drop (mail's Maildir, up's data folder, the
    metrics files)."""
    folders = [Path(args.maildir)] if getattr(args, "maildir", None) else []
    if getattr(args, "data", None):  # sockhop up: mail and the local CA's certificates (re-read on SIGHUP)
        folders.append(Path(args.data))
    if getattr(args, "admin", None):
        from sockhop.engine.metrics import Metrics

        folders.append(Path(Metrics.get().folder))
    return folders


def open_admin(args: argparse.Namespace):
    """The --admin listener (bound now, with the others, before any privilege drop), or None."""
    if not getattr(args, "admin", None):
        return None
    from sockhop.engine.metrics import AdminServer, Metrics

    (sock,) = open_listeners([parse_endpoint(args.admin)], socket.SOCK_STREAM)[:1]
    return AdminServer(sock, Metrics.get())


def outer_layers(args: argparse.Namespace, listeners: list[Listener], model: str) -> list[Listener]:
    """The layers every service gets around whatever factory it settled on: PROXY protocol outermost on streams
    (the header precedes TLS), and counting for --admin around everything (what crosses the socket). Applied here,
    to the final listeners, so a service that adjusts its listeners after open_service still gets them."""
    import dataclasses

    proxied = proxy_wrapper(args)
    metrics = None
    if getattr(args, "admin", None):
        from sockhop.engine.metrics import Metrics

        metrics = Metrics.get()
    wrapped = []
    for listener in listeners:
        factory = proxied(listener.factory) if listener.is_stream else listener.factory
        refused = listener.refused
        if metrics is not None:
            factory = metrics.metered(factory, listener.name, model, listener.is_stream)
            refused = metrics.refusals(listener.name, model)
        wrapped.append(dataclasses.replace(listener, factory=factory, refused=refused))
    return wrapped


def run_server(args: argparse.Namespace, listeners: list[Listener], model: str | None = None) -> int:
    """Drop privileges, build the chosen model over the listeners, say where it listens, and serve until stopped."""
    model = model or args.model
    # Imported before the drop: the user may not be able to read where Python and sockhop are installed.
    from sockhop.engine.restart import serve_restartable

    admin = None
    try:
        listeners = outer_layers(args, listeners, model)
        admin = open_admin(args)
        settle_privileges(args, listeners)
        server = make_server(model, listeners, limits_from(args))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        if admin is not None:
            admin.sock.close()
        raise
    workers = ""
    if model in ("pool", "prefork"):
        workers = f", {server.limits.worker_count()} workers"

    def announce() -> None:
        for listener in listeners:
            say(f"sockhop: {listener.describe()} (model {model}{workers})")
        if admin is not None:
            admin.start()
            where = format_address(admin.sock.getsockname())
            say(f"sockhop: admin tcp {where} (model {model}{workers})")

    try:
        serve_restartable(server, restart_fds(listeners, admin), announce)
    finally:
        if admin is not None:
            admin.stop()
    return 0


def restart_fds(listeners: list[Listener], admin: AdminServer | None) -> list[int]:
    """The descriptors a SIGUSR2 restart hands over: every listener's, and the admin listener's."""
    return [listener.sock.fileno() for listener in listeners] + ([admin.sock.fileno()] if admin else [])


# -- commands -------------------------------------------------------------------------------------------------------
def cmd_serve_echo(args: argparse.Namespace) -> int:
    from sockhop.echo import EchoDatagram, EchoStream

    if args.udp:
        listeners = open_service(args, EchoDatagram, socket.SOCK_DGRAM, name="echo")
    else:
        listeners = open_service(args, EchoStream, name="echo")
    return run_server(args, listeners)


def cmd_talk(args: argparse.Namespace) -> int:
    from sockhop.net.addresses import Endpoint, parse_port
    from sockhop.talk import talk
    from sockhop.tlsclient import client_context

    endpoint = Endpoint(args.host, parse_port(args.port, "udp" if args.udp else "tcp"))
    tls = client_context(args.cacert, insecure=args.insecure) if args.tls else None
    talk(endpoint, udp=args.udp, timeout=args.timeout, wait=args.wait, tls=tls)
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from sockhop.net import ports

    if args.port is None:
        print(ports.table())
    else:
        print(ports.describe(ports.query(args.port)))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    if args.config:
        from sockhop.config import up as up_from_file

        flags = {"--admin": args.admin, "--user": args.user, "--allow-root": args.allow_root}
        given = [flag for flag, value in flags.items() if value]
        if given:
            raise UsageError(f"with --config, {given[0]} goes in the file, for each service (as {given[0][2:]} = ...)")

        return up_from_file(args.config)
    from sockhop.up import up

    return up(args)


def cmd_check(args: argparse.Namespace) -> int:
    from sockhop.config import check

    return check(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockhop",
        description="Berkeley sockets made real: servers under six concurrency models, and clients.",
    )
    parser.add_argument("--version", action="version", version=f"sockhop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v events, -vv everything)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", help="start every service on loopback with built-in defaults")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--model", choices=list(MODELS), default="eventloop")
    up.add_argument("--workers", type=positive_int, default=0)
    up.add_argument("--data", default="sockhop-data", help="folder for what services keep (default ./sockhop-data)")
    up.add_argument("--idle-timeout", type=positive_float, default=60.0, metavar="S")
    up.add_argument("--max-connections", type=positive_int, default=1024, metavar="N")
    up.add_argument("--grace", type=positive_float, default=10.0, metavar="S")
    up.add_argument("--no-tls", action="store_true", help="no TLS listeners (and no local CA)")
    up.add_argument("--config", metavar="FILE", help="run the services sockhop.toml describes instead")
    add_production_options(up)
    up.set_defaults(func=cmd_up)

    check = sub.add_parser("check", help="validate a sockhop.toml and report every mistake with its line")
    check.add_argument("--config", metavar="FILE", default="sockhop.toml", help="default ./sockhop.toml")
    check.set_defaults(func=cmd_check)

    serve = sub.add_parser("serve", help="run one server")
    services = serve.add_subparsers(dest="service", metavar="SERVICE", required=True)
    echo = services.add_parser("echo", help="echo (RFC 862) over TCP, or UDP with --udp")
    echo.add_argument("--udp", action="store_true", help="serve datagrams instead of a stream")
    add_engine_options(echo, default_listen="127.0.0.1:7007")
    echo.set_defaults(func=cmd_serve_echo)
    web_cli.add_commands(sub, services)

    from sockhop.mail.cli import add_commands as add_mail_commands

    add_mail_commands(sub, services)

    from sockhop.dns import cli as dns_commands

    dns_commands.add_commands(sub, services)

    talk = sub.add_parser("talk", help="connect, send standard input, print what comes back (as netcat)")
    talk.add_argument("host")
    talk.add_argument("port", help="number or service name")
    talk.add_argument("--udp", action="store_true", help="one datagram per line of input")
    talk.add_argument("--timeout", type=positive_float, default=10.0, metavar="S", help="connect timeout")
    talk.add_argument("--wait", type=positive_float, default=1.0, metavar="S", help="UDP: wait this long for replies")
    talk.add_argument("--tls", action="store_true", help="speak TLS, verifying the server's certificate")
    talk.add_argument("--cacert", metavar="FILE", help="trust this CA instead of the system's store")
    talk.add_argument("-k", "--insecure", action="store_true", help="do not verify the certificate (warns)")
    talk.set_defaults(func=cmd_talk)

    ports = sub.add_parser("ports", help="what a port is for and which range it is in")
    ports.add_argument("port", nargs="?", help="a number or a service name; none: the table")
    ports.set_defaults(func=cmd_ports)
    return parser


class JsonFormatter(logging.Formatter):
    """``--log-format json``: one object per line, for log shippers (journald, Loki, Elasticsearch)."""

    converter = time.gmtime  # the Z in the timestamps

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(verbosity: int, fmt: str = "text") -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
        return
    logging.basicConfig(level=level, format="sockhop[%(process)d] %(levelname)s %(message)s", stream=sys.stderr)


def main_guard(func: Callable[..., int], *args) -> int:
    """Run a command so that every failure ends in one plain line and an exit status, never a traceback."""
    try:
        return func(*args)
    except SockhopError as exc:
        print(f"sockhop: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # last resort: still one line
        print(f"sockhop: {exc.strerror or exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    from sockhop.engine.restart import READY_FD

    if READY_FD in os.environ:
        # Started by a master restarting on SIGUSR2 from its helper thread, whose blocked signals exec kept.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, getattr(args, "log_format", "text"))
    return main_guard(args.func, args)
