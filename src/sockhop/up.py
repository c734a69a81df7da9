"""``sockhop up``: every service sockhop has, on loopback, with built-in defaults, in one server.

All services share one engine -- one event loop (or whichever model is asked for) serving every listener -- and
stop together on Ctrl-C.
"""

from __future__ import annotations

import argparse
import socket
import sys

from sockhop.echo import DEFAULT_PORT as ECHO_PORT
from sockhop.echo import EchoDatagram, EchoStream
from sockhop.engine import Limits, Listener, make_server
from sockhop.net.listeners import open_socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def up(args: argparse.Namespace) -> int:
    host = args.host
    fam = _family(host)
    shown = f"[{host}]" if ":" in host else host
    listeners: list[Listener] = []
    try:
        listeners.append(Listener(open_socket(fam, (host, ECHO_PORT)), EchoStream, name="echo"))
        listeners.append(Listener(open_socket(fam, (host, ECHO_PORT), socket.SOCK_DGRAM), EchoDatagram, name="echo"))
        limits = Limits(
            idle_timeout=args.idle_timeout, max_connections=args.max_connections, grace=args.grace, workers=args.workers
        )
        model = args.model
        if model in ("fork", "thread"):
            # UDP needs a model that serves datagrams; the stream services still get a process/thread each in
            # their own `sockhop serve` if that is what is wanted.
            print(f"sockhop: --model {model} cannot serve UDP; `sockhop up` uses eventloop", file=sys.stderr)
            model = "eventloop"
        server = make_server(model, listeners, limits)
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    print(f"sockhop up: serving on {host} (model {model}); Ctrl-C stops everything", file=sys.stderr)
    print(f"  echo  tcp {shown}:{ECHO_PORT}   try: echo hello | sockhop talk {host} {ECHO_PORT}", file=sys.stderr)
    print(f"  echo  udp {shown}:{ECHO_PORT}   try: echo hello | sockhop talk --udp {host} {ECHO_PORT}", file=sys.stderr)
    sys.stderr.flush()
    server.serve()
    print("sockhop up: stopped", file=sys.stderr)
    return 0
