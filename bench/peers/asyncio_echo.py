"""The peer: the same echo on asyncio's default event loop, or on uvloop with --uvloop.

Written the fastest way asyncio offers (a Protocol), so the comparison is fair to it; with --streams, the way
asyncio's documentation writes an echo server (StreamReader and StreamWriter), which is how most asyncio servers are
written.
"""

import argparse
import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close once the write buffer drains


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main(port: int, streams: bool) -> None:
    loop = asyncio.get_running_loop()
    if streams:
        server = await asyncio.start_server(echo_stream, "127.0.0.1", port, backlog=4096)
    else:
        server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--streams", action="store_true", help="StreamReader/StreamWriter, as asyncio's docs write it")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    try:
        asyncio.run(main(args.port, args.streams))
    except KeyboardInterrupt:
        pass
