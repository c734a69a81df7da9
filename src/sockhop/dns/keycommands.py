"""``sockhop dns keygen ZONE``, ``ds ZONE``, ``fold ZONEFILE`` and ``show FILE``: the command line of DNSSEC keys,
zone journals and the zones a secondary keeps. Light to import (the parser is built for every sockhop command);
the cryptography loads only when one of them runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sockhop.errors import UsageError

ALGORITHMS = ("ECDSAP256SHA256", "ED25519")  # sockhop.dns.keys.ALGORITHMS' names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    keygen = actions.add_parser("keygen", help="make a signing key for ZONE (for serve dns --sign)")
    keygen.add_argument("zone", metavar="ZONE")
    keygen.add_argument(
        "--algorithm", "-a", type=str.upper, choices=ALGORITHMS, default="ECDSAP256SHA256",
        help="ECDSAP256SHA256 (13, the default, as most zones) or ED25519 (15)",
    )  # fmt: skip
    keygen.add_argument("--key", "-f", metavar="FILE", help="where to write it (default ZONE.key, mode 0600)")
    keygen.set_defaults(parser=keygen)
    ds = actions.add_parser("ds", help="print the DS record the parent zone publishes for ZONE's key")
    ds.add_argument("zone", metavar="ZONE")
    ds.add_argument("--key", "-f", metavar="FILE", help="the key file (default ZONE.key)")
    ds.set_defaults(parser=ds)
    fold = actions.add_parser("fold", help="write the journal of dynamic updates into ZONEFILE, then empty it")
    fold.add_argument("zonefile", metavar="ZONEFILE")
    fold.add_argument("--data", metavar="DIR", help="where the journal is, as serve dns --data (default: beside)")
    fold.set_defaults(parser=fold)
    show = actions.add_parser("show", help="print a zone a secondary keeps (DIR/ZONE.axfr), or a zone file, as text")
    show.add_argument("file", metavar="FILE")
    show.set_defaults(parser=show)


def run(args: argparse.Namespace) -> int:
    import dns.exception
    import dns.name

    if args.action == "show":  # as BIND's named-compilezone -f raw -F text
        from sockhop.dns.axfrfile import read
        from sockhop.dns.fold import zone_text

        print(zone_text(read(args.file)), end="")
        return 0
    if args.action == "fold":
        from sockhop.dns.fold import fold

        folded, before, after = fold(args.zonefile, args.data)
        if folded:
            print(f"{args.zonefile}: folded {folded} changes, serial {before} -> {after}; the journal is empty")
        else:
            print(f"{args.zonefile}: no changes to fold (serial {before}); the journal is empty")
        return 0
    from sockhop.dns.keys import KeyFileError, default_path, generate, load, save

    path = Path(args.key) if args.key else default_path(args.zone)
    if args.action == "keygen":
        try:
            key = generate(args.zone, args.algorithm)
        except dns.exception.DNSException:
            raise UsageError(f"{args.zone!r} is not a zone name") from None
        save(key, path)
        print(f"wrote {path} (key tag {key.tag}); serve it with: sockhop serve dns ZONEFILE --sign {path}")
        print(key.ds_text())
        return 0
    key = load(path)
    if key.zone != dns.name.from_text(args.zone):
        raise KeyFileError(f"{path}: the key is for {key.zone}, not {args.zone}")
    print(key.ds_text())
    return 0
