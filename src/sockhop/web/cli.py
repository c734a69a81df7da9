"""The web's commands: ``sockhop serve web [ROOT]`` and ``sockhop get URL...``, and its part of ``sockhop up``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sockhop.errors import SockhopError

if TYPE_CHECKING:
    from sockhop.up import Offer, UpContext

DEFAULT_PORT = 8080


class SiteRootError(SockhopError):
    """The site root is not a directory."""


def web_options(root: Path, args: argparse.Namespace | None = None, *, access_log: str | None = None):
    """The shared options of every connection, from the command line (or the defaults)."""
    from sockhop.web.accesslog import AccessLog
    from sockhop.web.files import Site, SiteOptions
    from sockhop.web.protocol import HttpLimits, WebOptions

    if not root.is_dir():
        raise SiteRootError(f"not a directory: {root}")
    site = SiteOptions(
        root=root,
        listing=not getattr(args, "no_listing", False),
        dotfiles=getattr(args, "dotfiles", False),
        follow_symlinks=getattr(args, "follow_symlinks", False),
    )
    limits = HttpLimits(
        max_requests=getattr(args, "max_requests", HttpLimits.max_requests),
        header_timeout=getattr(args, "header_timeout", HttpLimits.header_timeout),
    )
    log = AccessLog(access_log) if access_log else None
    return WebOptions(Site(site), limits, log)


def cmd_serve_web(args: argparse.Namespace) -> int:
    from sockhop.cli import open_service, run_server
    from sockhop.web.protocol import BUSY, make_factory

    access_log = None if args.no_access_log else args.access_log
    options = web_options(Path(args.root), args, access_log=access_log)
    listeners = open_service(args, make_factory(options), busy=BUSY, name="web", alpn=("http/1.1",))
    try:
        return run_server(args, listeners)
    finally:
        if options.access_log is not None:
            options.access_log.close()  # what is still pending


def add_commands(sub: argparse._SubParsersAction, services: argparse._SubParsersAction) -> None:
    """``serve web`` under ``services``, ``get`` under the top-level ``sub``."""
    from sockhop.cli import add_engine_options
    from sockhop.options import positive_float, positive_int

    web = services.add_parser("web", help="HTTP/1.1 static files (the Apache role)")
    web.add_argument("root", nargs="?", default=".", help="the folder to serve (default: the current one)")
    web.add_argument("--no-listing", action="store_true", help="no HTML listing of folders without index.html")
    web.add_argument("--dotfiles", action="store_true", help="serve files and folders whose names start with '.'")
    web.add_argument("--follow-symlinks", action="store_true", help="serve symlinks that lead outside ROOT")
    web.add_argument("--access-log", metavar="FILE|-", default="-", help="Combined Log Format (default: stdout)")
    web.add_argument("--no-access-log", action="store_true", help="do not log requests")
    web.add_argument("--max-requests", type=positive_int, default=1000, metavar="N", help="per connection")
    web.add_argument(
        "--header-timeout",
        type=positive_float,
        default=20.0,
        metavar="S",
        help="time from a request's first byte to the end of its headers; 408 after it (default 20)",
    )
    add_engine_options(web, default_listen=f"127.0.0.1:{DEFAULT_PORT}")
    web.set_defaults(func=cmd_serve_web)

    from sockhop.web import get as get_command

    get = sub.add_parser("get", help="fetch URLs over HTTP/1.1 or HTTPS (as curl or wget)")
    get_command.add_arguments(get)
    get.set_defaults(func=get_command.run_get)


def web_service(ctx: UpContext) -> list[Offer]:
    """``sockhop up``: the built-in site about sockhop on port 8080."""
    from sockhop.engine.protocol import Listener
    from sockhop.up import Offer
    from sockhop.web.protocol import BUSY, make_factory
    from sockhop.web.site import site_root

    root = site_root()
    if ctx.user:  # the package may sit where that user cannot read (under /root): serve a copy it will own
        root = ctx.data / "site"
        shutil.copytree(site_root(), root, dirs_exist_ok=True)
    options = web_options(root, access_log=None)
    listener = Listener(ctx.open(DEFAULT_PORT), make_factory(options), busy=BUSY, name="web")
    host = f"[{ctx.host}]" if ":" in ctx.host else ctx.host
    return [Offer(listener, f"sockhop get http://{host}:{DEFAULT_PORT}/   (or open it in a browser)")]
