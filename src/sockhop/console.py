"""Lines for the person at the terminal, each written whole.

Several processes share one standard error -- a master and the successor it starts on SIGUSR2, ``sockhop up`` and
the services it runs -- and ``print`` writes a line and its newline in two pieces, between which another process's
line can land. A line written in one piece (well under the pipe's atomic size) arrives whole.
"""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """Write ``text`` and a newline to standard error in one write, at once."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
