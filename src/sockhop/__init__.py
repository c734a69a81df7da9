"""sockhop: the Berkeley-sockets lecture made real.

TCP and UDP servers under six concurrency models (iterative, fork, thread, pool, eventloop, prefork) driving
sans-IO protocols, and the lecture's example systems built on them.
"""

__version__ = "0.1.0"
