"""Lines for the person at the terminal, each written whole.

Several processes share one standard error -- a master and the successor it starts on SIGUSR2, ``sockhop up`` and
the services it runs -- and ``print`` writes a line and its newline in two pieces, between which another process's
line can land. A line written in one piece (well under the pipe's atomic size) arrives whole.
"""

from __future__ import annotations

import logging
import sys
import time

_json: list[JsonFormatter] = []  # set by setup_logging for --log-format json


def say(text: str) -> None:
    """Write ``text`` and a newline to standard error in one write, at once (as one JSON object under
    ``--log-format json``)."""
    if _json:
        record = logging.LogRecord("sockhop", logging.INFO, "", 0, text.removeprefix("sockhop: "), None, None)
        text = _json[0].format(record)
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class JsonFormatter(logging.Formatter):
    """``--log-format json``: one object per line, for log shippers (journald, Loki, Elasticsearch)."""

    converter = time.gmtime  # the Z in the timestamps

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(verbosity: int, fmt: str = "text") -> None:
    """-q: errors only; none: warnings; -v: what happens; -vv: everything."""
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    level = levels.get(max(-1, verbosity), logging.DEBUG)
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        formatter = JsonFormatter()
        handler.setFormatter(formatter)
        logging.basicConfig(level=level, handlers=[handler], force=True)
        _json[:] = [formatter]
        return
    logging.basicConfig(level=level, format="sockhop[%(process)d] %(levelname)s %(message)s", stream=sys.stderr)
