"""The engine suite's server: sockhop's echo, except that a message containing CRASH makes the protocol raise,
one containing ALARM sets a one-second alarm (Reply.alarm), LINGER or AT-ONCE ends the connection that way
(Reply.close), and a timeout says so before the connection closes.

It is run as a real subprocess, built with the same pieces as `sockhop serve echo`, so every model and limit the
CLI offers is exercised; the crash shows that a protocol's exception costs only its own connection.
"""

from __future__ import annotations

import argparse
import socket
import sys

from sockhop.cli import add_engine_options, main_guard, open_service, run_server, setup_logging
from sockhop.echo import EchoDatagram, EchoStream
from sockhop.engine import Close, Reply

TRIGGER = b"CRASH"


class CrashingEcho(EchoStream):
    def data_received(self, data: bytes) -> Reply | bytes:
        if TRIGGER in data:
            raise RuntimeError("asked to crash")
        if b"ALARM" in data:
            return Reply((data,), alarm=1.0)
        if b"LINGER" in data:
            return Reply((data,), Close.LINGER)
        if b"AT-ONCE" in data:
            return Reply((data,), Close.AT_ONCE)
        return data  # the shorthand sockhop's echo answers with: every model's suite runs through it

    def timed_out(self) -> Reply:
        return Reply((b"timed out\n",))


class CrashingEchoDatagram(EchoDatagram):
    def datagram_received(self, data: bytes, peer) -> list[bytes]:
        if TRIGGER in data:
            raise RuntimeError("asked to crash")
        return [data]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_engine_options(parser, default_listen="127.0.0.1:0")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.udp:
        listeners = open_service(args, CrashingEchoDatagram, socket.SOCK_DGRAM, name="echo")
    else:
        listeners = open_service(args, CrashingEcho, name="echo", busy=b"busy\n")
    return run_server(args, listeners)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:]))
