"""Sendmail's ``/etc/aliases`` (``--aliases FILE``): ``name: target, target``, ``#`` comments, continuation lines
(a line starting with a space or tab continues the one before), names case-insensitive, targets local names
(themselves aliases, or mailboxes) or whole addresses (local ones expand again, remote ones go to the queue).

What sockhop does not do of sendmail's format is refused when the file is read, not skipped: ``|command`` pipes,
``/file`` deliveries and ``:include:`` lists. An alias naming itself among its targets delivers to its own mailbox
too (``root: root, alice``), as sendmail does; a loop between aliases is cut where it closes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sockhop.errors import SockhopError

from .address import AddressSyntaxError, check_mailbox, split_address

MAX_EXPANSION = 1000  # addresses one recipient may expand to
MAX_DEPTH = 20


class AliasesError(SockhopError):
    """The aliases file cannot be read or has a mistake (named with its line)."""


def parse_aliases(text: str, where: str = "aliases") -> dict[str, tuple[str, ...]]:
    """``{name: (target, ...)}`` from an aliases file's text. Raises AliasesError naming the first bad line."""
    entries: list[tuple[int, str]] = []  # (first line number, logical line)
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw[0] in " \t":
            if not entries:
                raise AliasesError(f"{where}:{number}: a continuation line with nothing to continue")
            first, line = entries[-1]
            entries[-1] = (first, line + " " + raw.strip())
        else:
            entries.append((number, raw.strip()))
    aliases: dict[str, tuple[str, ...]] = {}
    for number, line in entries:
        name, sep, rest = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or any(ch.isspace() for ch in name):
            raise AliasesError(f"{where}:{number}: expected name: target, target")
        try:
            check_mailbox(name, utf8=True, domain_required=False)
        except AddressSyntaxError:
            raise AliasesError(f"{where}:{number}: bad alias name {name!r}") from None
        if "@" in name:
            raise AliasesError(f"{where}:{number}: an alias name is a local part, not an address: {name!r}")
        targets = tuple(t.strip() for t in rest.split(",") if t.strip())
        if not targets:
            raise AliasesError(f"{where}:{number}: {name} has no targets")
        for target in targets:
            if target.startswith(("|", "/", ":include:", '"|')):
                raise AliasesError(f"{where}:{number}: {target[:40]!r}: pipes, files and :include: are not supported")
            try:
                check_mailbox(target, utf8=True, domain_required=False)
            except AddressSyntaxError as exc:
                raise AliasesError(f"{where}:{number}: bad target {target[:64]!r}: {exc}") from None
        if name in aliases:
            raise AliasesError(f"{where}:{number}: {name} is defined twice")
        aliases[name] = targets
    return aliases


def load_aliases(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AliasesError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_aliases(text, str(path))


def expand(recipient: str, aliases: dict[str, tuple[str, ...]], is_local: Callable[[str], bool]) -> list[str]:
    """The addresses ``recipient`` stands for: an alias of a local recipient (``is_local(domain)``, or no domain)
    is replaced by its targets, again and again; others stay as they are. Order kept, duplicates dropped."""
    out: dict[str, None] = {}

    def walk(address: str, seen: frozenset[str], depth: int) -> None:
        local, domain = split_address(address)
        key = local.lower()
        if len(out) >= MAX_EXPANSION:
            return
        if (domain and not is_local(domain)) or key not in aliases or key in seen or depth > MAX_DEPTH:
            out.setdefault(address, None)
            return
        for target in aliases[key]:
            walk(target, seen | {key}, depth + 1)

    walk(recipient, frozenset(), 0)
    return list(out)
