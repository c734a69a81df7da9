"""Echo (RFC 862): whatever arrives goes back -- the smallest protocol that exercises every model, on TCP and UDP."""

from __future__ import annotations

import argparse
import socket

from sockhop.engine.listener import Listener
from sockhop.engine.protocol import Address, DatagramProtocol, StreamProtocol
from sockhop.service import Opener, Service, Twin, UpContext, UpPlan

DEFAULT_PORT = 7007  # echo's own port, 7, is privileged
BUSY = b"sockhop: too many connections; try again later\r\n"  # to a client refused at --max-connections

#: What a client over --max-connections is told before the close: echo has no words of its own for it (web sends
#: a 503, mail a 421), and without a line the client sees its bytes vanish.
BUSY = b"sockhop: too many connections; try again later\r\n"


class EchoStream(StreamProtocol):
    """Sends every byte back as it arrives; when the client half-closes, closes after the last byte."""

    __slots__ = ()

    def data_received(self, data: bytes) -> bytes:
        return data


class EchoDatagram(DatagramProtocol):
    """Sends every datagram back to its sender, whole."""

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        return [data]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--udp", action="store_true", help="serve datagrams instead of a stream")


def open_echo(args: argparse.Namespace, opener: Opener) -> list[Listener]:
    if args.udp:
        return opener.open(EchoDatagram, socket.SOCK_DGRAM)
    return opener.open(EchoStream, busy=BUSY)


def up_plans(ctx: UpContext) -> list[UpPlan]:
    talk = f"echo hello | {ctx.command} talk"
    return [
        UpPlan([], [f"{talk} {ctx.host} {DEFAULT_PORT}"]),
        UpPlan(["--udp"], [f"{talk} --udp {ctx.host} {DEFAULT_PORT}"], tls=False),
    ]


SERVICE = Service(
    name="echo",
    help="echo (RFC 862) over TCP, or UDP with --udp",
    default_port=DEFAULT_PORT,
    add_arguments=add_arguments,
    open=open_echo,
    up=up_plans,
    kinds=lambda args: (socket.SOCK_DGRAM,) if args.udp else (socket.SOCK_STREAM,),
    twin=Twin(7443, (), "openssl s_client -quiet -CAfile {ca} -connect {host}:7443"),
)
