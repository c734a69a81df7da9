"""Socket identification, as the lecture tells it: hosts and services resolved with getaddrinfo, IPv4 and IPv6,
well-known, registered and ephemeral ports, and listening sockets opened on them."""

from sockhop.net.addresses import Endpoint, parse_endpoint, resolve
from sockhop.net.listeners import open_listeners

__all__ = ["Endpoint", "open_listeners", "parse_endpoint", "resolve"]
