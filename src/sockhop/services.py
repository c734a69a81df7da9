"""Every service sockhop has, as the face reads them: ``sockhop serve``, ``sockhop up`` and ``sockhop.toml`` take
their names, options and defaults from here. Adding a service is one package with a ``SERVICE`` and its loader here.

A service's package is imported when it is first asked for: ``sockhop serve dns`` reads DNS's description alone
(:func:`load`), not web's and mail's, whose imports were most of its start-up time; ``SERVICES`` and ``BY_NAME``
(every description, for ``--help``, ``up`` and ``check``) import them all on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from sockhop.service import Service


def _echo() -> Service:
    from sockhop import echo

    return echo.SERVICE


def _web() -> Service:
    from sockhop.web.service import SERVICE

    return SERVICE


def _dns() -> Service:
    from sockhop.dns.service import SERVICE

    return SERVICE


def _mail() -> Service:
    from sockhop.mail.service import SERVICE

    return SERVICE


#: each service's name and where its description is, in the order the face lists them
LOADERS: dict[str, Callable[[], Service]] = {"echo": _echo, "web": _web, "dns": _dns, "mail": _mail}
NAMES: tuple[str, ...] = tuple(LOADERS)


def load(name: str) -> Service:
    """One service's description (its package imported now, if it was not)."""
    return LOADERS[name]()


def __getattr__(attribute: str):
    """``SERVICES`` (every description, in order) and ``BY_NAME``, made on first use."""
    if attribute == "SERVICES":
        return tuple(load(name) for name in NAMES)
    if attribute == "BY_NAME":
        return {name: load(name) for name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
