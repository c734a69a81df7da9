"""sockhop's echo with its busy line wired into the listener, as `sockhop serve echo` will have it: a client over
--max-connections is told why before the close. Run as a real subprocess (tests.support.start_server)."""

from __future__ import annotations

import argparse
import sys

from sockhop.cli import add_engine_options, main_guard, open_service, run_server, setup_logging
from sockhop.echo import BUSY, EchoStream


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_engine_options(parser, default_listen="127.0.0.1:0")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_server(args, open_service(args, EchoStream, name="echo", busy=BUSY))


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:]))
