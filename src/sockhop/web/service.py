"""The web as a service: ``sockhop serve web [ROOT]``, ``sockhop get``, and the built-in site of ``sockhop up``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sockhop.engine.listener import Listener
from sockhop.errors import SockhopError
from sockhop.options import positive_float, positive_int, size
from sockhop.service import Command, Opener, Problem, Service, Twin, UpContext, UpPlan
from sockhop.web import get

DEFAULT_PORT = 8080


class SiteRootError(SockhopError):
    """The site root is not a directory."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", default=".", help="the folder to serve (default: the current one)")
    parser.add_argument("--no-listing", action="store_true", help="no HTML listing of folders without index.html")
    parser.add_argument("--dotfiles", action="store_true", help="serve files and folders whose names start with '.'")
    parser.add_argument("--follow-symlinks", action="store_true", help="serve symlinks that lead outside ROOT")
    parser.add_argument("--access-log", metavar="FILE|-", default="-", help="Combined Log Format (default: stdout)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log requests")
    parser.add_argument("--max-requests", type=positive_int, default=1000, metavar="N", help="per connection")
    parser.add_argument(
        "--max-body",
        type=size,
        default=1024 * 1024,
        metavar="SIZE",
        help="largest request body read (nginx's client_max_body_size); 413 over it (default 1M)",
    )
    parser.add_argument(
        "--max-streams",
        type=positive_int,
        default=128,
        metavar="N",
        help="HTTP/2 streams a connection may have open at once; more are refused (REFUSED_STREAM; default 128)",
    )
    parser.add_argument(
        "--header-timeout",
        type=positive_float,
        default=20.0,
        metavar="S",
        help="time from a request's first byte to the end of its headers; 408 after it (default 20)",
    )


def web_options(args: argparse.Namespace):
    """The options every connection shares, from the parsed command line."""
    from sockhop.web.accesslog import AccessLog
    from sockhop.web.files import Site, SiteOptions
    from sockhop.web.protocol import HttpLimits, WebOptions

    root = Path(args.root)
    if not root.is_dir():
        raise SiteRootError(f"not a directory: {root}")
    site = SiteOptions(
        root=root, listing=not args.no_listing, dotfiles=args.dotfiles, follow_symlinks=args.follow_symlinks
    )
    limits = HttpLimits(
        max_requests=args.max_requests,
        header_timeout=args.header_timeout,
        max_streams=args.max_streams,
        max_body=args.max_body,
    )
    log = None if args.no_access_log or not args.access_log else AccessLog(args.access_log)
    return WebOptions(Site(site), limits, log)


def open_web(args: argparse.Namespace, opener: Opener) -> list[Listener]:
    from sockhop.web.protocol import BUSY, make_factory

    options = web_options(args)
    if options.access_log is not None:
        opener.at_stop(options.access_log.close)  # what is still pending
    return opener.open(make_factory(options), busy=BUSY, alpn=("h2", "http/1.1"))


def check_web(args: argparse.Namespace) -> list[Problem]:
    if not Path(args.root).is_dir():
        return [Problem("root", f"not a directory: {args.root}")]
    return []


def up_plans(ctx: UpContext) -> list[UpPlan]:
    """The built-in site about sockhop on port 8080."""
    from sockhop.web.site import site_root

    root = site_root()
    if ctx.user:  # the package may sit where that user cannot read (under /root): serve a copy it will own
        root = ctx.data / "site"
        shutil.copytree(site_root(), root, dirs_exist_ok=True)
    log = ["--no-access-log"] if ctx.quiet else ["--access-log", "-"]
    url = f"http://{ctx.url_host()}:{DEFAULT_PORT}/"
    return [UpPlan([str(root), *log], [f"{ctx.command} get {url}   # or open it in a browser"])]


SERVICE = Service(
    name="web",
    help="HTTP/1.1 and HTTP/2 static files (the Apache role)",
    default_port=DEFAULT_PORT,
    add_arguments=add_arguments,
    open=open_web,
    up=up_plans,
    twin=Twin(8443, ("h2", "http/1.1"), "{curl}"),
    check=check_web,
    commands=(Command("get", "fetch URLs over HTTP/1.1 or HTTP/2 (as curl)", get.add_arguments, get.run_get),),
)
