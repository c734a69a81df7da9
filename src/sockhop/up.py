"""``sockhop up``: every service sockhop has, on loopback, with built-in defaults, in one server.

Each service says what it runs under ``up`` (its :class:`~sockhop.service.UpPlan`: the ``sockhop serve`` arguments
it stands for); here they are parsed by the same parsers as ``sockhop serve``, given ``--listen`` on the service's
port and, with TLS, a twin on its twin port with the local CA's certificate, opened by the same opener, and served
together by one engine through the one serving path. Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from sockhop.engine.listener import Listener
from sockhop.net.addresses import format_host, format_host_port
from sockhop.service import UpContext, UpPlan

DASHBOARD_PORT = 8025  # Mailpit's and MailHog's web port: where people look for the mail they caught

# The options of `up` that every service's server takes as they are (the rest are the services' own).
SHARED = ("model", "workers", "deferred_threads", "idle_timeout", "max_connections", "grace", "tls_handshake_timeout",
          "reuse_port", "proxy_protocol", "user", "admin", "log_format", "allow_root", "pid_file")  # fmt: skip


def curl_command(ca: Path, host: str, port: int = 8443) -> str:
    """The one curl command that trusts the local CA and fetches from the HTTPS twin. The certificate is for
    localhost, 127.0.0.1 and ::1; any other loopback address is reached as localhost with --resolve."""
    if host in ("127.0.0.1", "::1", "localhost"):
        return f"curl --cacert {ca} https://localhost:{port}/"
    return f"curl --cacert {ca} --resolve localhost:{port}:{format_host(host)} https://localhost:{port}/"


def command_name() -> str:
    """How the person at the terminal runs sockhop: ``sockhop`` when that is on PATH, else the path of this one
    (``make run`` starts ``.venv/bin/sockhop``, which is not on PATH until ``make install``)."""
    here = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0].endswith("sockhop") else None
    found = shutil.which("sockhop")
    if found and (here is None or Path(found).resolve() == here):
        return "sockhop"
    if here is None:
        return f"{sys.executable} -m sockhop"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def service_args(parser: argparse.ArgumentParser, plan: UpPlan, argv: list[str], up: argparse.Namespace):
    """The ``sockhop serve`` arguments a plan stands for, parsed by the service's own parser, with up's engine and
    production options laid over them (one model, one set of limits for every service)."""
    args = parser.parse_args([*plan.argv, *argv])
    for name in SHARED:
        setattr(args, name, getattr(up, name))
    return args


def up(args: argparse.Namespace) -> int:
    """Every service in one engine. The production options mean what they mean for ``sockhop serve``."""
    from sockhop.cli import serve_parsers
    from sockhop.services import SERVICES
    from sockhop.serving import ArgsOpener, close_all, serve

    data = Path(args.data)
    quiet = args.verbose < 0
    if not args.pid_file:  # the new master after a SIGUSR2 restart is found here (it is not the terminal's child)
        data.mkdir(parents=True, exist_ok=True)
        args.pid_file = str(data / "sockhop.pid")
    ctx = UpContext(host=args.host, data=data, tls=not args.no_tls, quiet=quiet, command=command_name(),
                    user=args.user)  # fmt: skip
    model = args.model
    if model in ("fork", "thread"):
        print(f"sockhop: --model {model} cannot serve UDP; `sockhop up` uses eventloop", file=sys.stderr)
        model = args.model = "eventloop"
    certificate: list[str] = []
    if ctx.tls:
        from sockhop.localca import ensure_local_pki

        pki = ensure_local_pki(data / "tls")
        certificate = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    ca = data / "tls" / "ca.pem"
    parsers = serve_parsers()
    listeners: list[Listener] = []
    lines: dict[int, list[str]] = {}  # a listening socket's descriptor -> the lines that show it working
    stops = []
    jobs: list = []  # the services' background work
    folders = [data]
    inbox = None  # the Maildir the dashboard shows
    if args.no_dashboard:
        args.dashboard = None
    elif not args.dashboard:
        args.dashboard = format_host_port(args.host, DASHBOARD_PORT)
    try:
        for service in SERVICES:
            parser = parsers[service.name]
            for plan in service.up(ctx):
                argv = ["--listen", format_host_port(args.host, service.default_port)]
                twin = service.twin if ctx.tls and plan.tls else None
                if twin is not None:
                    argv += ["--listen-tls", format_host_port(args.host, twin.port), *certificate]
                opener = ArgsOpener(service_args(parser, plan, argv, args), service.name)
                opened = service.open(opener.args, opener)
                stops += opener.stops
                folders += service.folders(opener.args)
                jobs += service.jobs(opener.args)
                inbox = inbox or service.inbox(opener.args)
                listeners += opened
                plain = [listener for listener in opened if not listener.tls]
                lines[plain[0].sock.fileno()] = list(plan.try_lines)
                for listener in opened:
                    if listener.tls and twin is not None:
                        lines[listener.sock.fileno()] = [_twin_line(twin.try_line, ctx, ca, twin.port)]
    except BaseException:
        close_all(listeners)
        for action in stops:
            action()
        raise
    footer = []
    if ctx.tls:
        footer = [f"sockhop up: TLS certificates come from a local CA in {ca.parent}; make curl trust it with:",
                  f"    {curl_command(ca, ctx.host)}"]  # fmt: skip
    footer.append(f"sockhop up: the serving master's pid is in {args.pid_file}: `kill -USR2 $(cat {args.pid_file})` "
                  f"restarts it without refusing a connection, `kill $(cat {args.pid_file})` stops it")  # fmt: skip
    if ctx.command != "sockhop":
        footer.append("sockhop up: `make install` puts sockhop on your PATH (in ~/.local/bin)")
    return serve(
        args,
        listeners,
        model=model,
        folders=folders,
        lines=lambda listener: lines.get(listener.sock.fileno(), ()),
        banner=f"sockhop up: every service on {args.host} (model {model}); Ctrl-C stops them all",
        footer=footer,
        at_stop=stops,
        goodbye="sockhop up: stopped",
        jobs=jobs,
        inbox=inbox,
    )


def _twin_line(template: str, ctx: UpContext, ca: Path, port: int) -> str:
    curl = curl_command(ca, ctx.host, port)
    if "{curl}" in template and "--resolve" not in curl:
        curl += f"   # or: {ctx.command} get --cacert {ca} https://localhost:{port}/"
    return template.format(ca=ca, host=ctx.host, curl=curl, sockhop=ctx.command)
