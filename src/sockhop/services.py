"""Every service sockhop has, as the face reads them: ``sockhop serve``, ``sockhop up`` and ``sockhop.toml`` take
their names, options and defaults from here. Adding a service is one package with a ``SERVICE`` and its line here.

A service's package is imported when it is first asked for: ``sockhop serve dns`` reads DNS's description alone
(:func:`load`), not web's and mail's, whose imports were most of its start-up time; ``SERVICES`` and ``BY_NAME``
(every description, for ``--help``, ``up`` and ``check``) import them all on first use.
"""

from __future__ import annotations

import importlib

from sockhop.service import Service

#: each service's name and the module that holds its ``SERVICE``, in the order the face lists them
MODULES: dict[str, str] = {
    "echo": "sockhop.echo",
    "web": "sockhop.web.service",
    "dns": "sockhop.dns.service",
    "mail": "sockhop.mail.service",
}
NAMES: tuple[str, ...] = tuple(MODULES)


def load(name: str) -> Service:
    """One service's description (its package imported now, if it was not)."""
    return importlib.import_module(MODULES[name]).SERVICE


def __getattr__(attribute: str):
    """``SERVICES`` (every description, in order) and ``BY_NAME``, made on first use."""
    if attribute == "SERVICES":
        return tuple(load(name) for name in NAMES)
    if attribute == "BY_NAME":
        return {name: load(name) for name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
