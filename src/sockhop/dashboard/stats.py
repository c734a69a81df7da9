"""The services' counters as the dashboard shows them: what the metrics already keep (requests by status, queries by
rcode, messages by result, connections), read from their Prometheus text -- every process's share, as /metrics adds
them up -- and sampled now and then, so each service has a small history of the last minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: The counter a service reports its results in, and the label that names a result.
RESULTS = {
    "sockhop_http_requests": "code",
    "sockhop_dns_queries": "rcode",
    "sockhop_smtp_messages": "result",
}
HISTORY = 150  # samples kept: five minutes at one every two seconds


@dataclass
class ServiceStats:
    results: dict[str, float] = field(default_factory=dict)  # result label -> count since start
    connections: float = 0.0
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # results per sample interval


def read(exposition: bytes) -> dict[str, ServiceStats]:
    """The counts in Prometheus' text format, by service."""
    found: dict[str, ServiceStats] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            service = sample.labels.get("service")
            if service is None:
                continue
            stats = found.setdefault(service, ServiceStats())
            name = sample.name.removesuffix("_total")
            if name in RESULTS:
                label = sample.labels.get(RESULTS[name], "?")
                stats.results[label] = stats.results.get(label, 0) + sample.value
            elif name == "sockhop_connections":
                stats.connections += sample.value
    return found


class Sampler:
    """Each service's counts, and how many results each sample interval added."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceStats] = {}

    def sample(self, exposition: bytes) -> None:
        now = read(exposition)
        for name, stats in now.items():
            before = self.services.get(name)
            total = sum(stats.results.values())
            previous = sum(before.results.values()) if before is not None else total
            stats.history = before.history if before is not None else deque(maxlen=HISTORY)
            stats.history.append(max(0.0, total - previous))
            self.services[name] = stats

    def to_json(self, listeners: dict[str, list[str]], model: str) -> dict:
        names = sorted(set(listeners) | set(self.services))
        return {
            "model": model,
            "services": [
                {
                    "name": name,
                    "listeners": listeners.get(name, []),
                    "model": model,
                    "results": {k: int(v) for k, v in sorted(self.services.get(name, ServiceStats()).results.items())},
                    "connections": int(self.services.get(name, ServiceStats()).connections),
                    "history": list(self.services.get(name, ServiceStats()).history),
                }
                for name in names
            ],
        }
