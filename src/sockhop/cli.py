"""The ``sockhop`` command: parses arguments, builds a service, hands it to an engine.

Every mistake a user can make ends in one plain line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable, Sequence

from sockhop import __version__
from sockhop.engine import MODELS, Limits, Listener, make_server
from sockhop.engine.limits import default_workers
from sockhop.errors import SockhopError
from sockhop.net.addresses import parse_endpoint
from sockhop.net.listeners import open_listeners
from sockhop.web import cli as web_cli

log = logging.getLogger("sockhop")


class UsageError(SockhopError):
    """Wrong use of the command."""


# -- shared pieces of the serve commands ----------------------------------------------------------------------------
def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


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
    parser.add_argument("--idle-timeout", type=positive_float, default=60.0, metavar="S", help="default 60")
    parser.add_argument("--max-connections", type=positive_int, default=1024, metavar="N", help="default 1024")
    parser.add_argument(
        "--grace", type=positive_float, default=10.0, metavar="S", help="time to finish on stop (default 10)"
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        grace=args.grace,
        workers=args.workers,
    )


def endpoints_from(args: argparse.Namespace, proto: str = "tcp"):
    # Only --listen-tls given: TLS only. Neither: the service's default plain endpoint.
    texts = args.listen or ([] if getattr(args, "listen_tls", None) else [args.default_listen])
    return [parse_endpoint(text, proto=proto) for text in texts]


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
    socks = open_listeners(endpoints_from(args, proto), kind)
    listeners = [Listener(sock, factory, busy=busy, name=name) for sock in socks]
    if context is not None:
        from sockhop.engine.tls import TLSLayer

        try:
            tls_socks = open_listeners([parse_endpoint(text, proto=proto) for text in tls_endpoints], kind)
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            raise
        tls_factory = TLSLayer.factory(context, factory, handshake_timeout=args.tls_handshake_timeout)
        listeners += [Listener(sock, tls_factory, name=name, tls=True, reload=context.reload) for sock in tls_socks]
    return listeners


def run_server(args: argparse.Namespace, listeners: list[Listener], model: str | None = None) -> int:
    """Build the chosen model over the listeners, say where it listens, and serve until stopped."""
    model = model or args.model
    try:
        server = make_server(model, listeners, limits_from(args))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    workers = ""
    if model in ("pool", "prefork"):
        workers = f", {server.limits.worker_count()} workers"

    def announce() -> None:
        for listener in listeners:
            print(f"sockhop: {listener.describe()} (model {model}{workers})", file=sys.stderr, flush=True)

    server.serve(on_ready=announce)
    return 0


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
    from sockhop.up import up

    return up(args)


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
    up.set_defaults(func=cmd_up)

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


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
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
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return main_guard(args.func, args)
