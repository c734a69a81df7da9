"""``sockhop resolve``: ask a name server one question and print the answer in dig's sections."""

from __future__ import annotations

import argparse

from sockhop.errors import UsageError
from sockhop.options import positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sockhop resolve``'s options."""
    parser.add_argument("words", nargs="+", metavar="NAME [TYPE] [@SERVER[:PORT]]")
    parser.add_argument("--tcp", action="store_true", help="ask over TCP from the start")
    parser.add_argument(
        "--tls", action="store_true", help="ask over DNS over TLS (RFC 7858; port 853 unless @SERVER:PORT says)"
    )
    parser.add_argument(
        "--cacert", metavar="FILE", help="with --tls: trust the CA certificates in FILE instead of the system's"
    )
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="with --tls: do not verify the certificate (with a warning)"
    )
    parser.add_argument("--timeout", type=positive_float, default=2.0, metavar="S", help="per try (default 2)")
    parser.add_argument("--tries", type=positive_int, default=3, metavar="N", help="UDP tries per server (default 3)")
    parser.add_argument("--short", action="store_true", help="print only the answer's data, one per line")


def run(args: argparse.Namespace) -> int:
    from sockhop.dns.resolver import format_dig, format_short, parse_words, query

    name, rdtype, server = parse_words(args.words)
    if (args.cacert or args.insecure) and not args.tls:
        raise UsageError("--cacert and -k are for --tls")
    tls = {"tls": args.tls, "cacert": args.cacert, "insecure": args.insecure}
    result = query(name, rdtype, server, tcp=args.tcp, timeout=args.timeout, tries=args.tries, **tls)
    print(format_short(result) if args.short else format_dig(result))
    return 0
