"""Prometheus metrics of the proxy (`GET /metrics`): requests by route and status, their latency,
the meter outbox (backlog, oldest event's age, dead letters), the result cache, rate limiting.
One registry per app, so tests can run several."""

from __future__ import annotations

import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.billing.store import OutboxStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelfolio_proxy_requests_total",
            "Requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelfolio_proxy_request_seconds",
            "Time to answer, by route template (a Prefer: wait includes the prediction)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "modelfolio_outbox_backlog", "Meter events waiting for Stripe", registry=self.registry
        )
        self.outbox_oldest = Gauge(
            "modelfolio_outbox_oldest_age_seconds",
            "Age of the oldest meter event waiting for Stripe (0 when none waits)",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "modelfolio_meter_dead_letters",
            "Meter events Stripe could not take, waiting for an operator",
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "modelfolio_cache_hits", "Creates answered from the result cache", registry=self.registry
        )
        self.cache_misses = Counter(
            "modelfolio_cache_misses", "Cacheable creates the model had to run", registry=self.registry
        )
        self.rate_limited = Counter(
            "modelfolio_rate_limited",
            "Requests refused with 429 by a [[ratelimits]] window",
            ["limit"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_cache(self, outcome: str) -> None:
        (self.cache_hits if outcome == "hit" else self.cache_misses).inc()

    def render(self, outbox: OutboxStats | None, now: datetime.datetime) -> bytes:
        if outbox is not None:
            self.outbox_backlog.set(outbox.backlog)
            self.dead_letters.set(outbox.dead)
            oldest = datetime.datetime.fromisoformat(outbox.oldest) if outbox.oldest else now
            self.outbox_oldest.set(max(0.0, (now - oldest).total_seconds()))
        return generate_latest(self.registry)
