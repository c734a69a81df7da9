"""The ``sockhop`` command: its parser is built from the services' own descriptions (sockhop.services), and every
server it starts goes through the one serving path (sockhop.serving).

Every mistake a user can make ends in one plain line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from sockhop import __version__
from sockhop.console import setup_logging
from sockhop.errors import SockhopError, UsageError
from sockhop.options import positive_float
from sockhop.service import Service


# -- commands -------------------------------------------------------------------------------------------------------
def serve_command(service: Service) -> Callable[[argparse.Namespace], int]:
    """``sockhop serve NAME``: the service's listeners, through the one serving path."""

    def run(args: argparse.Namespace) -> int:
        from sockhop.serving import ArgsOpener, serve

        opener = ArgsOpener(args, service.name)
        listeners = service.open(args, opener)
        return serve(
            args,
            listeners,
            model=args.model,
            folders=service.folders(args),
            at_stop=opener.stops,
            jobs=service.jobs(args),
            inbox=service.inbox(args),
        )

    return run


def cmd_talk(args: argparse.Namespace) -> int:
    from sockhop.talk import endpoint_for, talk
    from sockhop.tlsclient import client_context

    endpoint = endpoint_for(args.host, args.port, udp=args.udp)
    tls = client_context(args.cacert, insecure=args.insecure) if args.tls else None
    return talk(endpoint, udp=args.udp, timeout=args.timeout, wait=args.wait, tls=tls) or 0


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

        options = (("--admin", args.admin), ("--user", args.user), ("--dashboard", args.dashboard))
        given = [flag for flag, value in options if value]
        given += ["--allow-root"] if args.allow_root else []
        if given:
            raise UsageError(f"with --config, {given[0]} goes in the file, for each service (as {given[0][2:]} = ...)")
        return up_from_file(args.config, pid_file=args.pid_file)
    from sockhop.up import up

    return up(args)


def cmd_check(args: argparse.Namespace) -> int:
    from sockhop.config import check

    return check(args.config)


# -- the parser -----------------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """A parser whose every sub-command takes -v/-q wherever they are written (``sockhop serve echo ... -v``)."""

    def add_verbosity(self) -> None:
        # SUPPRESS: a sub-command that is not given -v leaves the count the top level made
        self.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log more (-v events, -vv everything)"
        )
        self.add_argument(
            "-q", "--quiet", action="store_const", const=-1, dest="verbose", default=argparse.SUPPRESS,
            help="errors only (and, for up, no line per request, query and message)",
        )  # fmt: skip


def _leaf(sub: argparse._SubParsersAction, name: str, *, verbosity: bool = True, **kwargs) -> Parser:
    parser: Parser = sub.add_parser(name, **kwargs)
    if verbosity:
        parser.add_verbosity()
    parser.set_defaults(parser=parser)
    return parser


def add_serve_parser(services: argparse._SubParsersAction, service: Service) -> Parser:
    """``serve NAME``: the service's own options, then where it listens, the engine and production options."""
    from sockhop.serving import add_engine_options, add_listen_options, add_production_options

    parser = _leaf(services, service.name, help=service.help, description=service.description or service.help)
    service.add_arguments(parser)
    add_listen_options(parser, service.default_listen)
    add_engine_options(parser)
    add_production_options(parser)
    if service.defaults:
        parser.set_defaults(**service.defaults)
        for action in parser._actions:
            if action.dest in service.defaults and action.help:
                action.help = f"default {service.defaults[action.dest]:g}"
    parser.set_defaults(func=serve_command(service))
    return parser


def serve_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of each ``sockhop serve NAME``, by name: ``up`` and ``sockhop.toml`` read options through them."""
    from sockhop.services import SERVICES

    services = Parser(prog="sockhop serve").add_subparsers(parser_class=Parser)
    return {service.name: add_serve_parser(services, service) for service in SERVICES}


def serving(argv: Sequence[str]) -> str | None:
    """The service of ``sockhop [-v|-q] serve NAME ...`` (None for any other command): the parser for it needs that
    service's description alone, and importing the others would only slow its start."""
    from sockhop.services import NAMES

    at = next((i for i, word in enumerate(argv) if not word.startswith("-")), len(argv))  # sockhop's own: no values
    if argv[at : at + 1] == ["serve"] and at + 1 < len(argv) and argv[at + 1] in NAMES:
        return argv[at + 1]
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command; ``only``: the parser of ``serve ONLY`` and nothing else of the services."""
    from sockhop import services
    from sockhop.serving import add_engine_options, add_listen_options, add_production_options

    SERVICES = (services.load(only),) if only else services.SERVICES  # noqa: N806

    parser = Parser(
        prog="sockhop",
        description="Berkeley sockets made real: servers under six concurrency models, and clients.",
    )
    parser.add_argument("--version", action="version", version=f"sockhop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v events, -vv everything)")
    parser.add_argument(
        "-q", "--quiet", action="store_const", const=-1, dest="verbose", help="errors only (and, for up, no activity)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    up = _leaf(sub, "up", help="start every service on loopback with built-in defaults")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--data", default="sockhop-data", help="folder for what services keep (default ./sockhop-data)")
    up.add_argument("--no-tls", action="store_true", help="no TLS listeners (and no local CA)")
    up.add_argument("--config", metavar="FILE", help="run the services sockhop.toml describes instead")
    add_engine_options(up)
    add_listen_options(up, "")  # --proxy-protocol and --reuse-port mean what they mean for serve
    for action in up._actions:  # where up listens is --host and each service's port, not --listen
        if action.dest in ("listen", "listen_tls", "tls_cert", "tls_key"):
            action.help = argparse.SUPPRESS
    add_production_options(up)
    up.add_argument("--no-dashboard", action="store_true", help="no dashboard (default: on, at --host port 8025)")
    up.set_defaults(func=cmd_up)

    check = _leaf(sub, "check", help="validate a sockhop.toml and report every mistake with its line")
    check.add_argument("--config", metavar="FILE", default="sockhop.toml", help="default ./sockhop.toml")
    check.set_defaults(func=cmd_check)

    serve = sub.add_parser("serve", help="run one server")
    services = serve.add_subparsers(dest="service", metavar="SERVICE", required=True, parser_class=Parser)
    for service in SERVICES:
        add_serve_parser(services, service)
    for service in () if only else SERVICES:
        for command in service.commands:
            # a client's -v is its own (curl's, dig's, swaks': the conversation), not sockhop's log level
            client = _leaf(sub, command.name, help=command.help, description=command.description or command.help,
                           verbosity=False)  # fmt: skip
            command.add_arguments(client)
            client.set_defaults(func=command.run)

    talk = _leaf(sub, "talk", help="connect, send standard input, print what comes back (as netcat)")
    talk.add_argument("host", help="a name or address ([::1] or ::1 for IPv6)")
    talk.add_argument("port", help="number or service name")
    talk.add_argument("--udp", action="store_true", help="one datagram per line of input")
    talk.add_argument("--timeout", type=positive_float, default=10.0, metavar="S", help="connect timeout")
    talk.add_argument("--wait", type=positive_float, default=1.0, metavar="S", help="UDP: wait this long for replies")
    talk.add_argument("--tls", action="store_true", help="speak TLS, verifying the server's certificate")
    talk.add_argument("--cacert", metavar="FILE", help="trust this CA instead of the system's store")
    talk.add_argument("-k", "--insecure", action="store_true", help="do not verify the certificate (warns)")
    talk.set_defaults(func=cmd_talk)

    ports = _leaf(sub, "ports", help="what a port is for and which range it is in")
    ports.add_argument("port", nargs="?", help="a number or a service name; none: the table")
    ports.set_defaults(func=cmd_ports)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, with an unknown option reported by the sub-command it was given to (its usage, not the top level's)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner = getattr(args, "parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


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
    from sockhop.process.restart import READY_FD

    if READY_FD in os.environ:
        # Started by a master restarting on SIGUSR2 from its helper thread, whose blocked signals exec kept.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(serving(argv))
    args = parse(parser, argv)
    setup_logging(args.verbose, getattr(args, "log_format", "text"))
    return main_guard(args.func, args)
