"""The web as a service: ``sockhop serve web [ROOT]``, ``sockhop get``, and the built-in site of ``sockhop up``."""

from __future__ import annotations

import argparse
import shutil
import signal
from pathlib import Path

from sockhop.engine.listener import Listener
from sockhop.errors import SockhopError
from sockhop.options import positive_float, positive_int, size
from sockhop.service import Command, Opener, Problem, Service, Twin, UpContext, UpPlan
from sockhop.web import get
from sockhop.web.hosts import host_spec
from sockhop.web.upstream import proxy_spec

DEFAULT_PORT = 8080


class SiteRootError(SockhopError):
    """The site root is not a directory."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        nargs="?",
        default=None,
        help="the folder to serve (default: the current one); with --host, what answers the names no --host names",
    )
    parser.add_argument(
        "--host",
        dest="hosts",
        action="append",
        type=host_spec,
        metavar="NAME=ROOT[,OPT...]",
        help="a virtual host (repeatable), as nginx's server_name and root; OPT: listing, no-listing, dotfiles, "
        "follow-symlinks, access-log=FILE, no-access-log, default (answers unknown names; else the first host)",
    )
    parser.add_argument("--no-listing", action="store_true", help="no HTML listing of folders without index.html")
    parser.add_argument("--dotfiles", action="store_true", help="serve files and folders whose names start with '.'")
    parser.add_argument("--follow-symlinks", action="store_true", help="serve symlinks that lead outside ROOT")
    parser.add_argument("--access-log", metavar="FILE|-", default="-", help="Combined Log Format (default: stdout)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log requests")
    parser.add_argument("--max-requests", type=positive_int, default=1000, metavar="N", help="per connection")
    parser.add_argument(
        "--error-page",
        action="append",
        type=error_page,
        metavar="STATUS=/PAGE",
        help="send the site's PAGE for that error, with its status (nginx's error_page); repeatable",
    )
    parser.add_argument(
        "--cache-control",
        action="append",
        type=cache_control,
        metavar="/PREFIX=VALUE",
        help="Cache-Control for files under a URL prefix, e.g. '/assets/=max-age=31536000, immutable'; repeatable, "
        "the longest prefix wins",
    )
    parser.add_argument(
        "--auth-basic-user-file",
        metavar="FILE",
        help="ask for a user and password (HTTP Basic) from this htpasswd file, bcrypt only (htpasswd -B); "
        "nginx's auth_basic_user_file",
    )
    parser.add_argument(
        "--auth-basic",
        default="Restricted",
        metavar="REALM",
        help="the realm the browser shows when it asks (nginx's auth_basic; default Restricted)",
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="compress text files on the fly for clients that accept it: gzip, and brotli where the brotli package is "
        "installed (nginx's gzip on); precompressed .br/.gz siblings are still preferred",
    )
    parser.add_argument(
        "--compress-min-length",
        type=size,
        default=256,
        metavar="SIZE",
        help="smaller files are sent as they are (nginx's gzip_min_length; default 256)",
    )
    parser.add_argument(
        "--compress-level",
        type=compress_level,
        default=6,
        metavar="1-9",
        help="gzip's level, brotli's quality (nginx's gzip_comp_level; default 6)",
    )
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
        "--proxy",
        action="append",
        type=proxy_spec,
        metavar="/PREFIX=URL[,URL...]",
        help="send requests under PREFIX to HTTP/1.1 upstreams, in turn (nginx's proxy_pass): http://IP:PORT[/PATH], "
        "https://NAME:PORT[/PATH] (verified) or unix:/SOCKET[:/PATH]; repeatable",
    )
    parser.add_argument(
        "--proxy-ca", metavar="FILE", help="the CA file an https:// upstream's certificate is checked against"
    )
    parser.add_argument(
        "--proxy-connect-timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="an upstream not connected by then is skipped, or answered 504 (default 10)",
    )
    parser.add_argument(
        "--proxy-read-timeout",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="an upstream silent this long while answering: 504, or the client's connection aborted (default 60)",
    )
    parser.add_argument(
        "--header-timeout",
        type=positive_float,
        default=20.0,
        metavar="S",
        help="time from a request's first byte to the end of its headers; 408 after it (default 20)",
    )


def error_page(text: str) -> tuple[int, str]:
    """``404=/404.html``: nginx's ``error_page 404 /404.html``."""
    code, sep, page = text.partition("=")
    if not sep or not code.strip().isdigit() or not 400 <= int(code) <= 599 or not page.startswith("/"):
        raise argparse.ArgumentTypeError(f"not STATUS=/PAGE (a 4xx or 5xx status, a path in the site): {text!r}")
    return int(code), page


def cache_control(text: str) -> tuple[str, str]:
    """``/assets/=max-age=31536000, immutable``: the first ``=`` ends the prefix."""
    prefix, sep, value = text.partition("=")
    if not sep or not prefix.startswith("/") or not value.strip() or any(c in value for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"not /PREFIX=VALUE: {text!r}")
    return prefix, value.strip()


def compress_level(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 9:
        raise argparse.ArgumentTypeError(f"not a level from 1 to 9: {text!r}")
    return int(text)


def web_options(args: argparse.Namespace):
    """The options every connection shares, from the parsed command line."""
    from sockhop.web.accesslog import AccessLog
    from sockhop.web.auth import BasicAuth
    from sockhop.web.files import Site, SiteOptions
    from sockhop.web.hosts import Hosts, VirtualHost
    from sockhop.web.protocol import HttpLimits, WebOptions
    from sockhop.web.upstream import UpstreamError, make_routes

    for problem in check_web(args):
        raise SiteRootError(problem.message)
    logs: dict[str, AccessLog] = {}  # one AccessLog per file, however many hosts share it
    compressor = None
    if args.compress:
        from sockhop.web.compress import Compressor

        compressor = Compressor(min_size=args.compress_min_length, level=args.compress_level)

    guards: dict[str, BasicAuth] = {}  # one per htpasswd file

    def guard(path: str | None) -> BasicAuth | None:
        if not path:
            return None
        if path not in guards:
            guards[path] = BasicAuth(path, args.auth_basic)
        return guards[path]

    def host(root: str, settings: dict) -> VirtualHost:
        site = SiteOptions(
            root=Path(root),
            listing=settings.get("listing", not args.no_listing),
            dotfiles=settings.get("dotfiles", args.dotfiles),
            follow_symlinks=settings.get("follow_symlinks", args.follow_symlinks),
            compressor=compressor,
            cache_control=tuple(args.cache_control or ()),
            error_pages=tuple(args.error_page or ()),
            auth=guard(settings.get("auth", args.auth_basic_user_file)),
            proxy=make_routes([*(args.proxy or ()), *settings.get("proxy", ())], args.proxy_ca),
        )
        target = settings.get("access_log", "" if args.no_access_log else args.access_log)
        if target and target not in logs:
            logs[target] = AccessLog(target)
        return VirtualHost(Site(site), logs.get(target) if target else None)

    specs = args.hosts or []
    try:
        named = {spec.name: host(spec.root, spec.settings) for spec in specs}
        default = host(args.root or ".", {}) if args.root is not None or not specs else None
    except UpstreamError as exc:
        raise SiteRootError(str(exc)) from None
    if default is None:
        marked = [spec.name for spec in specs if spec.settings.get("default")]
        default = named[marked[0] if marked else specs[0].name]
    limits = HttpLimits(
        max_requests=args.max_requests,
        header_timeout=args.header_timeout,
        max_streams=args.max_streams,
        max_body=args.max_body,
    )
    return WebOptions(default.site, limits, default.log, hosts=Hosts(default, named))


def _reopen_on_usr1(logs) -> None:
    """SIGUSR1 is nginx's "reopen the logs", sent by logrotate's postrotate scripts: the access logs look at once
    whether their file was rotated away (they also look by themselves once a second, so a prefork or fork worker
    the signal does not reach follows within a second). Never fatal, which is the signal's default action."""

    def reopen(signum, frame) -> None:
        for log in logs:
            log.reopen_soon()

    try:
        signal.signal(signal.SIGUSR1, reopen)
    except ValueError:  # not the main thread (a server started from a test's thread): nothing to protect
        pass


def open_web(args: argparse.Namespace, opener: Opener) -> list[Listener]:
    from sockhop.web.protocol import BUSY, make_factory

    options = web_options(args)
    for log in options.hosts.logs():
        opener.at_stop(log.close)  # what is still pending
    _reopen_on_usr1(options.hosts.logs())
    hosts = options.hosts
    if any(host.site.options.proxy is not None for host in (hosts.default, *hosts.named.values())):
        from sockhop.web.proxy import ProxyOptions, make_proxy_factory

        proxy = ProxyOptions(args.proxy_connect_timeout, args.proxy_read_timeout)
        return opener.open(make_proxy_factory(options, proxy), busy=BUSY, alpn=("h2", "http/1.1"))
    return opener.open(make_factory(options), busy=BUSY, alpn=("h2", "http/1.1"))


def check_web(args: argparse.Namespace) -> list[Problem]:
    problems = []
    if not Path(args.root or ".").is_dir():
        problems.append(Problem("root", f"not a directory: {args.root}"))
    names: set[str] = set()
    for spec in args.hosts or []:
        if not Path(spec.root).is_dir():
            problems.append(Problem(f"hosts={spec.name}", f"not a directory: {spec.root} (host {spec.name})"))
        if spec.name in names:
            problems.append(Problem(f"hosts={spec.name}", f"host {spec.name} is named twice"))
        names.add(spec.name)
    from sockhop.web.auth import HtpasswdError, read_htpasswd

    files = {args.auth_basic_user_file} | {spec.settings.get("auth") for spec in args.hosts or []}
    for path in sorted(str(f) for f in files if f):
        try:
            read_htpasswd(path)
        except HtpasswdError as exc:
            problems.append(Problem("auth-basic-user-file", str(exc)))
    if sum(1 for spec in args.hosts or [] if spec.settings.get("default")) > 1:
        problems.append(Problem("hosts", "more than one host is marked default"))
    return problems


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
