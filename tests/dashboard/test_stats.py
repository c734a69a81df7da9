"""The dashboard's counters, read from the very text /metrics serves (a real Metrics registry counting real
results), and their history over sample intervals."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from sockhop.dashboard.stats import Sampler, read


def exposition(http: dict[str, int], dns: dict[str, int], connections: int) -> bytes:
    registry = CollectorRegistry()
    requests = Counter("sockhop_http_requests", "", ("service", "model", "code"), registry=registry)
    queries = Counter("sockhop_dns_queries", "", ("service", "model", "proto", "rcode"), registry=registry)
    opened = Counter("sockhop_connections", "", ("service", "model"), registry=registry)
    for code, n in http.items():
        requests.labels("web", "eventloop", code).inc(n)
    for rcode, n in dns.items():
        queries.labels("dns", "eventloop", "udp", rcode).inc(n)
        queries.labels("dns", "eventloop", "tcp", rcode).inc(1)
    opened.labels("web", "eventloop").inc(connections)
    return generate_latest(registry)


def test_results_by_service_and_label():
    stats = read(exposition({"200": 5, "404": 2}, {"NOERROR": 3, "NXDOMAIN": 1}, 4))
    assert stats["web"].results == {"200": 5, "404": 2} and stats["web"].connections == 4
    assert stats["dns"].results == {"NOERROR": 4, "NXDOMAIN": 2}  # UDP and TCP added up


def test_history_counts_what_each_interval_added():
    sampler = Sampler()
    sampler.sample(exposition({"200": 5}, {}, 1))
    sampler.sample(exposition({"200": 8, "500": 1}, {}, 2))
    sampler.sample(exposition({"200": 8, "500": 1}, {}, 2))
    assert list(sampler.services["web"].history) == [0, 4, 0]
    shown = sampler.to_json({"web": ["tcp 127.0.0.1:8080"], "mail": ["tcp 127.0.0.1:2525"]}, "eventloop")
    assert [s["name"] for s in shown["services"]] == ["mail", "web"]
    web = shown["services"][1]
    assert web["results"] == {"200": 8, "500": 1} and web["history"] == [0, 4, 0] and web["listeners"]
