"""``sockhop resolve``: ask a name server, the way dig is asked, and print the answer in dig's sections.

dig's options go anywhere among the names (``@127.0.0.1 -p 5353 example.com MX +short``), so everything from the
first name on is taken as it comes and read in order by :func:`sockhop.dns.resolver.parse_words`; sockhop's own
``--options`` found there are parsed as if they had come first."""

from __future__ import annotations

import argparse
import sys

from sockhop.errors import UsageError
from sockhop.options import positive_float, positive_int


class DigOption(argparse.Action):
    """dig's -x/-t/-q/-p/-c before the first name: kept, in order, for parse_words."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.dig = [*getattr(namespace, "dig", []), option_string, values]


def add_options(parser: argparse.ArgumentParser) -> None:
    """sockhop's own options (the ones that may also come after the names)."""
    parser.add_argument("--tcp", action="store_true", help="ask over TCP from the start (dig's +tcp)")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sockhop resolve``'s options: dig's words, dig's dash options and +options, and sockhop's own."""
    parser.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="NAME [TYPE] [@SERVER[:PORT]] [+OPTION]...",
        help="as dig: several names are asked in turn; +short, +tcp, +tls, +[no]recurse, +dnssec, +[no]edns,"
        " +noall +answer (and +[no]cmd, comments, question, authority, additional, stats), +time=S, +tries=N",
    )  # fmt: skip
    parser.set_defaults(dig=[])
    parser.add_argument("-x", action=DigOption, metavar="ADDR", help="reverse lookup: the PTR of ADDR")
    parser.add_argument("-t", action=DigOption, metavar="TYPE", help="the record type (as a TYPE word)")
    parser.add_argument("-q", action=DigOption, metavar="NAME", help="a name to ask (as a NAME word)")
    parser.add_argument("-p", action=DigOption, metavar="PORT", help="the port of @SERVERs given without one")
    parser.add_argument("-c", action=DigOption, metavar="CLASS", help="IN, the only class asked")
    add_options(parser)


def run(args: argparse.Namespace) -> int:
    """Each question in turn, as dig: a reply with any rcode (NXDOMAIN too) is printed and is success; a question
    no server answered is one line on standard error, and the exit status 1 once all are done."""
    from sockhop.dns.resolver import ResolveError, format_dig, format_short, parse_words, query, tls_context

    late = argparse.ArgumentParser(prog="sockhop resolve", add_help=False)
    add_options(late)
    _, words = late.parse_known_args(args.words, namespace=args)  # sockhop's --options among the names
    lookup = parse_words([*args.dig, *words])
    tls = args.tls or lookup.tls
    if (args.cacert or args.insecure) and not tls:
        raise UsageError("--cacert and -k are for --tls")
    context = tls_context(args.cacert, args.insecure) if tls else None  # once: -k warns once
    short = args.short or lookup.short
    failed = 0
    for name, rdtype in lookup.questions:
        try:
            result = query(
                name, rdtype, lookup.servers or None, tcp=args.tcp or lookup.tcp, tls=tls, context=context,
                timeout=lookup.timeout or args.timeout, tries=lookup.tries or args.tries, port=lookup.port,
                recurse=lookup.recurse, dnssec=lookup.dnssec, edns=lookup.edns, payload=lookup.payload,
                rcode_errors=False,
            )  # fmt: skip
        except ResolveError as exc:
            failed += 1
            sys.stdout.flush()
            print(f"sockhop: {exc}", file=sys.stderr, flush=True)
            continue
        text = format_short(result) if short else format_dig(result, lookup.display)
        if text:
            print(text, flush=True)
    return 1 if failed else 0
