"""The engine: six ways of serving many clients, one protocol contract.

``serve(listeners, model=..., limits=...)`` runs until SIGINT/SIGTERM (or ``stop()``); every model drives the same
sans-IO protocol objects from :mod:`sockhop.engine.protocol`.
"""

from sockhop.engine.limits import Limits
from sockhop.engine.listener import Listener
from sockhop.engine.models import MODELS, make_server, serve
from sockhop.engine.protocol import NOTHING, Close, DatagramProtocol, FileRegion, Reply, StreamProtocol

__all__ = [
    "MODELS",
    "NOTHING",
    "Close",
    "DatagramProtocol",
    "FileRegion",
    "Limits",
    "Listener",
    "Reply",
    "StreamProtocol",
    "make_server",
    "serve",
]
