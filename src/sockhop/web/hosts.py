"""Virtual hosts: several sites on one address, chosen by the request's Host (HTTP/1.1) or :authority (HTTP/2).

As nginx's ``server_name``: a name is matched exactly (case aside, port and a final dot dropped); a request for a
name nobody configured goes to the default host -- the positional ROOT when one is given (nginx's catch-all
``server_name _``), else the host marked ``default``, else the first one named, as nginx's first ``server`` block.
The lookup is one dict access on the header's value as sent, a second only when it carries a port or capitals.

On the command line a host is one value, ``--host NAME=ROOT[,OPTION...]``, with the options of the whole server
as its defaults: ``listing``/``no-listing``, ``dotfiles``/``no-dotfiles``, ``follow-symlinks``/
``no-follow-symlinks``, ``access-log=FILE``/``no-access-log``, ``auth-basic-user-file=FILE``, ``default``, and
``proxy=/PREFIX=URL[|URL...]`` (repeatable; ``|`` between a prefix's upstreams, since ``,`` separates options).
sockhop.toml's ``[services.web.hosts."NAME"]`` tables turn into exactly that.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from sockhop.web.accesslog import AccessLog
from sockhop.web.files import Site
from sockhop.web.upstream import proxy_spec

#: A host name as a server name: labels of letters, digits, hyphens and underscores (or an IP address).
_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.?|\[[0-9a-f:.]+\]")

#: A Host header's (or :authority's) value, RFC 9110 7.2: uri-host [ ":" port ].
HOST_VALUE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")

#: The switches a host may carry, and the default-taking settings they set.
_FLAGS = {
    "listing": ("listing", True),
    "no-listing": ("listing", False),
    "dotfiles": ("dotfiles", True),
    "no-dotfiles": ("dotfiles", False),
    "follow-symlinks": ("follow_symlinks", True),
    "no-follow-symlinks": ("follow_symlinks", False),
    "no-access-log": ("access_log", ""),
    "default": ("default", True),
}


@dataclass(frozen=True)
class HostSpec:
    """One ``--host`` as written: a name, its root, and the settings it gives (the others are the server's)."""

    name: str
    root: str
    settings: dict[str, object] = field(default_factory=dict)


def host_spec(text: str) -> HostSpec:
    """``NAME=ROOT[,OPTION...]``, as argparse's ``type``: a mistake is one line saying what is wrong."""
    name, sep, rest = text.partition("=")
    name = name.strip().lower()
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"not NAME=ROOT: {text!r}")
    if _NAME.fullmatch(name) is None:
        raise argparse.ArgumentTypeError(f"not a host name: {name!r}")
    root, *options = rest.split(",")
    if not root:
        raise argparse.ArgumentTypeError(f"no root for {name}")
    settings: dict[str, object] = {}
    for option in options:
        option = option.strip()
        key, has_value, value = option.partition("=")
        if key == "access-log" and has_value and value:
            settings["access_log"] = value
        elif key == "auth-basic-user-file" and has_value and value:
            settings["auth"] = value
        elif key == "proxy" and has_value and value:  # proxy=/PREFIX=URL[|URL...], repeatable
            try:
                proxies = settings.setdefault("proxy", [])
                assert isinstance(proxies, list)
                proxies.append(proxy_spec(value))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{exc} (host {name})") from None
        elif option in _FLAGS:
            setting, flag = _FLAGS[option]
            settings[setting] = flag
        else:
            known = ", ".join([*_FLAGS, "access-log=FILE", "auth-basic-user-file=FILE", "proxy=/PREFIX=URL[|URL...]"])
            raise argparse.ArgumentTypeError(f"unknown option {option!r} for host {name} (known: {known})")
    return HostSpec(name.rstrip("."), root, settings)


class VirtualHost(NamedTuple):
    """What answers one host name: its site and where its requests are logged."""

    site: Site
    log: AccessLog | None


class Hosts:
    """The virtual hosts of a server, and the one that answers names nobody configured."""

    def __init__(self, default: VirtualHost, named: dict[str, VirtualHost] | None = None) -> None:
        self.default = default
        self.named = named or {}
        self.all_logs = self.logs()

    def pick(self, host: str | None) -> VirtualHost:
        """The host for a Host header's value (None: no header, as an HTTP/1.0 request may come)."""
        named = self.named
        if not named or not host:
            return self.default
        found = named.get(host)
        if found is not None:
            return found
        name = host.lower()
        if name[-1:] != "]":  # drop a port, but not an IPv6 literal's colons
            head, colon, port = name.rpartition(":")
            if colon and "]" not in port:
                name = head
        return named.get(name.rstrip("."), self.default)

    def logs(self) -> list[AccessLog]:
        """Every distinct access log, to close at stop."""
        seen: dict[int, AccessLog] = {}
        for host in (self.default, *self.named.values()):
            if host.log is not None:
                seen[id(host.log)] = host.log
        return list(seen.values())
