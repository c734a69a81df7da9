"""The engine: six ways of serving many clients, one protocol contract.

``serve(listeners, model=..., limits=...)`` runs until SIGINT/SIGTERM (or ``stop()``); every model drives the same
sans-IO protocol objects from :mod:`sockhop.engine.protocol`; what they do when no bytes arrive (wake-ups,
timers, outbound connections, background jobs) goes through :mod:`sockhop.engine.reactor`.
"""

from sockhop.engine.limits import Limits
from sockhop.engine.listener import Listener
from sockhop.engine.models import MODELS, make_server, serve
from sockhop.engine.protocol import (
    NOTHING,
    ClientProtocol,
    Close,
    DatagramProtocol,
    FileRegion,
    Job,
    Reply,
    StreamProtocol,
)
from sockhop.engine.reactor import Handle

__all__ = [
    "MODELS",
    "NOTHING",
    "ClientProtocol",
    "Close",
    "DatagramProtocol",
    "FileRegion",
    "Handle",
    "Job",
    "Limits",
    "Listener",
    "Reply",
    "StreamProtocol",
    "make_server",
    "serve",
]
