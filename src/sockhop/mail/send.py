"""``sockhop send``: build a message with the email package and deliver it (to ``--server``, or by MX), with the
options swaks users type."""

from __future__ import annotations

import argparse

from sockhop.options import positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sockhop send``'s options."""
    parser.add_argument("--from", dest="sender", metavar="ADDR", help="default: you@this host's name")
    parser.add_argument("--to", action="append", metavar="ADDR", help="repeatable, or ADDR,ADDR")
    parser.add_argument("--cc", action="append", metavar="ADDR", help="repeatable: in the Cc header and the envelope")
    parser.add_argument("--bcc", action="append", metavar="ADDR", help="repeatable: in the envelope only")
    parser.add_argument("--server", metavar="ENDPOINT", help="deliver here (host:port) instead of looking up MX")
    parser.add_argument(
        "--port", type=positive_int, metavar="N",
        help="SMTP port of the MX hosts, or of a --server without one (default: an _smtp._tcp SRV record's, else 25)",
    )  # fmt: skip
    parser.add_argument("--dns", metavar="ENDPOINT", help="DNS server for MX lookups (default the system's)")
    parser.add_argument("--subject", default="")
    parser.add_argument("--body", help="message text (default: read standard input)")
    parser.add_argument("--attach", action="append", default=[], metavar="FILE", help="repeatable")
    parser.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'",
        help="repeatable: replaces the message's header of that name, else adds it (swaks' --header)",
    )  # fmt: skip
    parser.add_argument(
        "--add-header", action="append", metavar="'NAME: VALUE'", help="repeatable: adds a header (swaks')"
    )
    parser.add_argument(
        "--data", metavar="FILE|-|TEXT",
        help="send this message as it is (raw RFC 5322) instead of building one: a file, - for standard input,"
        " @FILE, or the text itself with \\n for line breaks (swaks' --data)",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", dest="trace", action="store_true",
        help="show the SMTP conversation on standard error, as swaks does",
    )  # fmt: skip
    parser.add_argument("--helo", help="name to give in EHLO (default this host's name)")
    parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="S")
    parser.add_argument(
        "--tls", choices=("required", "opportunistic", "off"), default="opportunistic",
        help="STARTTLS: required (and the certificate verified), opportunistic (when offered; default, as"
        " Postfix's 'may'), off",
    )  # fmt: skip
    parser.add_argument("--cacert", metavar="FILE", help="trust this CA (PEM) instead of the system's trust store")
    parser.add_argument(
        "--auth", nargs="?", const="PLAIN,LOGIN", metavar="MECH[,MECH]",
        help="log in (AUTH, RFC 4954) with PLAIN or LOGIN, the first the server offers (default: either)",
    )  # fmt: skip
    parser.add_argument("--auth-user", metavar="USER", help="who to log in as (implies --auth)")
    parser.add_argument("--auth-password", metavar="PASS", help="default: asked for on the terminal")
    parser.add_argument(
        "--auth-insecure", action="store_true",
        help="send the password even where TLS does not protect it (by default AUTH is only done inside TLS)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """One line per recipient; exit 1 if any was not delivered."""
    from .client import send_command

    return send_command(args)
