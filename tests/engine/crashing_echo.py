"""The engine suite's server: sockhop's echo, except that a message containing CRASH makes the protocol raise,
one containing ALARM sets a one-second alarm (Reply.alarm), LINGER or AT-ONCE ends the connection that way
(Reply.close), BURSTS:N answers N bursts of 64 KiB, each sent only when the last has gone (WHEN_DRAINED), then
"done", and a timeout says so before the connection closes.

It is run as a real subprocess, built with the same pieces as `sockhop serve echo`, so every model and limit the
CLI offers is exercised; the crash shows that a protocol's exception costs only its own connection.
"""

from __future__ import annotations

import argparse
import socket
import sys

from sockhop.cli import Parser, add_serve_parser, main_guard
from sockhop.console import setup_logging
from sockhop.echo import EchoDatagram, EchoStream, add_arguments
from sockhop.engine import Close, Reply
from sockhop.engine.protocol import WHEN_DRAINED
from sockhop.service import Opener, Service

TRIGGER = b"CRASH"


BURST = b"b" * 65536


class CrashingEcho(EchoStream):
    bursts = 0

    def data_received(self, data: bytes) -> Reply | bytes:
        if data.startswith(b"BURSTS:"):
            self.bursts = int(data[7:].strip())
            return self.output_drained()
        if TRIGGER in data:
            raise RuntimeError("asked to crash")
        if b"ALARM" in data:
            return Reply((data,), alarm=1.0)
        if b"LINGER" in data:
            return Reply((data,), Close.LINGER)
        if b"AT-ONCE" in data:
            return Reply((data,), Close.AT_ONCE)
        return data  # the shorthand sockhop's echo answers with: every model's suite runs through it

    def output_drained(self) -> Reply:
        if self.bursts <= 0:
            return Reply((b"done\n",))
        self.bursts -= 1
        return Reply((BURST, WHEN_DRAINED))

    def timed_out(self) -> Reply:
        return Reply((b"timed out\n",))


class CrashingEchoDatagram(EchoDatagram):
    def datagram_received(self, data: bytes, peer) -> list[bytes]:
        if TRIGGER in data:
            raise RuntimeError("asked to crash")
        return [data]


def open_crashing(args: argparse.Namespace, opener: Opener) -> list:
    if args.udp:
        return opener.open(CrashingEchoDatagram, socket.SOCK_DGRAM)
    return opener.open(CrashingEcho, busy=b"busy\n")


# A service of its own, described as sockhop's are: the face serves it through the one serving path.
SERVICE = Service("echo", "echo that crashes on demand", 0, add_arguments, open_crashing, up=lambda ctx: [])


def run(argv: list[str]) -> int:
    services = Parser(prog="crashing_echo").add_subparsers(parser_class=Parser)
    args = add_serve_parser(services, SERVICE).parse_args(argv)
    setup_logging(getattr(args, "verbose", 0))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:]))
