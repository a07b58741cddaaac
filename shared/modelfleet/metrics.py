"""One Prometheus schema for every fleet process: prefix ``modelfleet_``, labels service/route.

Each app owns a :class:`Metrics` with its own registry, so several apps can live in one process
(tests) without clashing, and ``/metrics`` renders exactly that app's series.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The *_created series double the scrape size and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The common collectors, plus factories for service-specific ones in the same registry."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self._rendered = self.registry
        self.requests = self.counter(
            "requests_total", "Requests by route and HTTP status.", ["route", "status"]
        )
        self.request_duration = self.histogram(
            "request_duration_seconds", "End-to-end request latency.", ["route"]
        )
        self.in_flight = self.gauge("requests_in_flight", "Requests being served.", ["route"])
        self.batch_size = self.histogram(
            "batch_size", "Items per forward pass.", [], buckets=BATCH_BUCKETS
        )
        self.queue_depth = self.gauge("queue_depth", "Items waiting for a forward pass.", [])
        self.model_load = self.gauge(
            "model_load_seconds", "Seconds spent loading and warming the model.", ["model"]
        )
        self.model_info = self.gauge(
            "model_info", "The model this process serves (value 1).", ["model", "revision"]
        )
        self.input_tokens = self.counter("input_tokens_total", "Input tokens processed.", ["route"])

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        return Counter(f"modelfleet_{name}", doc, ["service", *labels], registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> Gauge:
        # livesum: with several processes (modelfleet.supervisor), a gauge is the sum over the
        # live ones (requests in flight, queue depth); ignored in a single process.
        return Gauge(f"modelfleet_{name}", doc, ["service", *labels], registry=self.registry,
                     multiprocess_mode="livesum")  # fmt: skip

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            f"modelfleet_{name}",
            doc,
            ["service", *labels],
            buckets=buckets,
            registry=self.registry,
        )

    def aggregate(self, directory: str, extra: Sequence[Collector] = ()) -> None:
        """Render, from now on, the sum over every process writing to ``directory``
        (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) and ``extra``,
        instead of this process's own series."""
        registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        for collector in extra:
            registry.register(collector)
        self._rendered = registry

    def render(self) -> bytes:
        return generate_latest(self._rendered)
