"""Prometheus metrics: what an operator watches. One registry per app, so tests can run several."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, queue_depths: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry = CollectorRegistry()
        self.predictions = Counter(
            "modelfolio_predictions_total",
            "Predictions that ended, by status",
            ["model", "status"],
            registry=self.registry,
        )
        self.predict_seconds = Histogram(
            "modelfolio_predict_seconds",
            "Each prediction's share of its batch's compute time",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.latency_seconds = Histogram(
            "modelfolio_prediction_latency_seconds",
            "From create to done, queueing included",
            ["model"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelfolio_batch_size",
            "Predictions per forward pass",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.errors = Counter(
            "modelfolio_http_errors_total",
            "Error answers, by kind",
            ["status", "kind"],
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(queue_depths))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueDepth(Collector):
    def __init__(self, depths: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "modelfolio_queue_depth", "Predictions waiting per model version", labels=["model", "version"]
        )
        for (model, version), depth in self._depths().items():
            gauge.add_metric([model, version], depth)
        yield gauge
