"""The six models by name, and the one call that runs a server."""

from __future__ import annotations

from sockhop.engine.base import Server
from sockhop.engine.eventloop import EventLoopServer
from sockhop.engine.forking import ForkingServer
from sockhop.engine.iterative import IterativeServer
from sockhop.engine.limits import Limits
from sockhop.engine.listener import Listener
from sockhop.engine.pooled import PooledServer
from sockhop.engine.prefork import PreforkServer
from sockhop.engine.protocol import Job
from sockhop.engine.threaded import ThreadedServer
from sockhop.errors import EngineError

MODELS: dict[str, type[Server]] = {
    "iterative": IterativeServer,
    "fork": ForkingServer,
    "thread": ThreadedServer,
    "pool": PooledServer,
    "eventloop": EventLoopServer,
    "prefork": PreforkServer,
}

DATAGRAM_MODELS = tuple(name for name, cls in MODELS.items() if cls.supports_datagrams)


def make_server(
    model: str, listeners: list[Listener], limits: Limits | None = None, jobs: list[Job] | tuple = ()
) -> Server:
    """A server of the named model over open listeners, with background ``jobs`` (engine/reactor.py) started
    when it serves. Raises EngineError for an unknown model or a model that cannot serve these listeners (fork or
    thread with UDP)."""
    try:
        cls = MODELS[model]
    except KeyError:
        raise EngineError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}") from None
    return cls(listeners, limits, jobs=jobs)


def serve(model: str, listeners: list[Listener], limits: Limits | None = None, jobs: list[Job] | tuple = ()) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully."""
    make_server(model, listeners, limits, jobs).serve()
