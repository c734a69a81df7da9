#!/usr/bin/env python3
"""The aiosmtpd peer of bench/mail.py: aiosmtpd on asyncio's default loop, storing each message with
mailbox.Maildir (tmp/ then rename into new/); with --fsync the file and new/ are fsynced before the 250 (durable,
as sockhop is). From shared/peers/smtp.sh, which measured the issue's figures."""

import asyncio
import mailbox
import os
import sys

from aiosmtpd.smtp import SMTP

port, root, do_fsync = int(sys.argv[1]), sys.argv[2], "--fsync" in sys.argv
md = mailbox.Maildir(root, create=True)
newdir = os.open(os.path.join(root, "new"), os.O_RDONLY)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        key = md.add(envelope.original_content or envelope.content)
        if do_fsync:
            fd = os.open(os.path.join(root, "new", key), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            os.fsync(newdir)
        return "250 2.0.0 Ok: queued"


async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Handler(), hostname="peer.example.test"), "127.0.0.1", port,
                                   backlog=1024)  # fmt: skip
    await srv.serve_forever()


asyncio.run(main())
