"""``sockhop mail passwd FILE USER``: add a user to a submission password file, or change their password."""

from __future__ import annotations

import argparse
import getpass
import sys

from sockhop.errors import SockhopError

from .auth import PasswordFileError, set_password


class PasswdError(SockhopError):
    """The password cannot be set that way."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    passwd = actions.add_parser(
        "passwd", help="set a user's password in a password file (--users); the password is read from standard "
        "input when it is not a terminal, else asked twice",
    )  # fmt: skip
    passwd.add_argument("file", metavar="FILE")
    passwd.add_argument("user", metavar="USER", help="a name (user@each --domain is theirs) or a whole address")
    passwd.add_argument(
        "--address", action="append", metavar="ADDR", help="another sender address this user may use; repeatable"
    )


def read_password() -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise PasswdError("the passwords differ")
    if not password:
        raise PasswdError("an empty password is not allowed")
    return password


def run(args: argparse.Namespace) -> int:
    password = read_password()
    try:
        set_password(args.file, args.user, password, tuple(args.address) if args.address else None)
    except PasswordFileError as exc:
        raise PasswdError(str(exc)) from None
    print(f"sockhop: password of {args.user.lower()} set in {args.file}", file=sys.stderr)
    return 0
