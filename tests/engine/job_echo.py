"""A service with a background job, served through the face (`sockhop serve`'s one serving path): sockhop's echo,
plus tests/engine/wakeful.py's Pinger reporting to ``--job-target``."""

from __future__ import annotations

import argparse
import sys

from sockhop.cli import Parser, add_serve_parser, main_guard
from sockhop.console import setup_logging
from sockhop.echo import EchoStream, add_arguments
from sockhop.service import Opener, Service
from tests.engine.wakeful import Pinger, address


def arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    parser.add_argument("--job-target", type=address, required=True)


def jobs(args: argparse.Namespace) -> list:
    Pinger.target = args.job_target
    return [Pinger()]


def open_echo(args: argparse.Namespace, opener: Opener) -> list:
    return opener.open(EchoStream)


SERVICE = Service("echo", "echo with a background job", 0, arguments, open_echo, up=lambda ctx: [], jobs=jobs)


def run(argv: list[str]) -> int:
    services = Parser(prog="job_echo").add_subparsers(parser_class=Parser)
    args = add_serve_parser(services, SERVICE).parse_args(argv)
    setup_logging(getattr(args, "verbose", 0))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:]))
