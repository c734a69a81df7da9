"""The arguments of MAIL FROM and RCPT TO (RFC 5321 section 4.1.2): a path in angle brackets and ESMTP
parameters.

Strict where it matters (brackets, characters, lengths), tolerant where every real client is: one space after the
colon is accepted, and a source route (``<@relay:user@domain>``) is parsed and ignored, as RFC 5321 requires.
"""

from __future__ import annotations

import re

from sockhop.errors import RemoteProtocolError

from .codes import Code

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255
MAX_PATH = 256

ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+")
QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
LABEL = re.compile(r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?")
LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")
ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")


class AddressSyntaxError(RemoteProtocolError):
    """Syntax error in the mailbox address."""

    def __init__(self, message: str | None = None, *, hint: int | None = Code.PARAMETER_SYNTAX) -> None:
        super().__init__(message, hint=hint)


def parse_path(arg: str, keyword: str) -> tuple[str, dict[str, str | None]]:
    """``FROM:<a@b> SIZE=10`` (with keyword "FROM") -> ("a@b", {"SIZE": "10"}).

    The address is "" for the null reverse-path ``<>``. Parameter names are upper-cased. Raises AddressSyntaxError.
    """
    head, sep, rest = arg.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise AddressSyntaxError(f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest[1:] if rest.startswith(" ") else rest
    if not rest.startswith("<"):
        raise AddressSyntaxError("the address must be in angle brackets: <user@domain>")
    end = _closing_bracket(rest)
    if end < 0:
        raise AddressSyntaxError("missing > after the address")
    path, params = rest[1:end], rest[end + 1 :]
    if params and not params.startswith(" "):
        raise AddressSyntaxError("expected a space between the address and its parameters")
    if len(path) > MAX_PATH:
        raise AddressSyntaxError("the address is too long", hint=Code.SYNTAX_ERROR)
    return strip_source_route(path), parse_params(params)


def _closing_bracket(text: str) -> int:
    """The index of the ``>`` closing the path, skipping quoted strings (a quoted local part may hold ``>``)."""
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return -1


def strip_source_route(path: str) -> str:
    """``@a,@b:user@d`` -> ``user@d``: RFC 5321 says a server must accept source routes and should ignore them."""
    if path.startswith("@"):
        route, sep, rest = path.partition(":")
        if not sep or not all(hop.startswith("@") and hop[1:] for hop in route.split(",")):
            raise AddressSyntaxError("bad source route")
        return rest
    return path


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for word in text.split():
        name, eq, value = word.partition("=")
        if not ESMTP_KEYWORD.fullmatch(name) or (eq and not ESMTP_VALUE.fullmatch(value)):
            raise AddressSyntaxError(f"bad parameter {word[:40]!r}")
        params[name.upper()] = value if eq else None
    return params


def split_address(address: str) -> tuple[str, str]:
    """``user@Example.COM`` -> ("user", "example.com"); a bare local part (``postmaster``) has domain ""."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain.lower().rstrip(".")


def check_mailbox(address: str, *, utf8: bool, domain_required: bool = True) -> None:
    """Raise AddressSyntaxError unless ``address`` is a mailbox RFC 5321 (or, with ``utf8``, RFC 6531) allows."""
    if not utf8 and not address.isascii():
        raise AddressSyntaxError("non-ASCII address without SMTPUTF8", hint=Code.MAILBOX_NAME_NOT_ALLOWED)
    local, sep, domain = address.rpartition("@")
    if not sep:
        local, domain = address, ""
        if domain_required:
            raise AddressSyntaxError("the address needs a domain: user@domain")
    if not local or len(local.encode()) > MAX_LOCAL_PART:
        raise AddressSyntaxError("the local part must be 1 to 64 octets")
    if not (QUOTED.fullmatch(local) or all(ATEXT.fullmatch(atom) for atom in local.split("."))):
        raise AddressSyntaxError(f"bad local part {local[:64]!r}")
    if sep:
        if len(domain) > MAX_DOMAIN:
            raise AddressSyntaxError("the domain is too long")
        if not (LITERAL.fullmatch(domain) or all(LABEL.fullmatch(label) for label in domain.rstrip(".").split("."))):
            raise AddressSyntaxError(f"bad domain {domain[:64]!r}")
