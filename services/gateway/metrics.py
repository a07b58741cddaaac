"""The gateway's series in the shared ``modelfleet_`` schema (service="gateway")."""

from __future__ import annotations

from collections.abc import Sequence

from modelfleet.metrics import Metrics

SERVICE = "gateway"


class GatewayMetrics(Metrics):
    """The common request series plus upstream, cache, circuit and rate-limit series."""

    def __init__(self) -> None:
        super().__init__(SERVICE)
        self.upstream_duration = self.histogram(
            "upstream_duration_seconds", "Latency of calls to backend replicas.", ["pool"]
        )
        self.upstream_retries = self.counter(
            "upstream_retries_total", "Upstream attempts retried on another replica.", ["pool"]
        )
        self.fallbacks = self.counter(
            "fallbacks_total", "Requests served by a fallback.", ["from_pool", "to"]
        )
        self.cache_requests = self.counter(
            "cache_requests_total", "Inference cache lookups by result.", ["route", "result"]
        )
        self.backend_up = self.gauge(
            "backend_up", "Whether a replica passes its health check.", ["pool", "replica"]
        )
        self.circuit_state = self.gauge(
            "circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["pool", "replica"]
        )
        self.rate_limited = self.counter(
            "rate_limited_total", "Requests refused by auth or rate limits.", ["kind"]
        )
        self.redis_up = self.gauge("redis_up", "Whether Redis answers.", [])
        # Counted before a replica is chosen: requests for a pool at zero replicas (answered
        # 503) count too, so KEDA can wake the pool on it (the pool itself exports nothing).
        self.pool_requests = self.counter(
            "pool_requests_total", "Admitted requests per pool, served or not.", ["pool"]
        )

    def pool_demand(self, pool: str) -> None:
        self.pool_requests.labels(SERVICE, pool).inc()

    def cache_result(self, route: str, result: str) -> None:
        self.cache_requests.labels(SERVICE, route, result).inc()

    def fallback(self, from_pool: str, to: str) -> None:
        self.fallbacks.labels(SERVICE, from_pool, to).inc()

    def refused(self, kind: str) -> None:
        self.rate_limited.labels(SERVICE, kind).inc()

    def zero(self, pools: Sequence[str], cached_routes: Sequence[str],
             fallbacks: Sequence[tuple[str, str]]) -> None:  # fmt: skip
        """Create every known label set at 0, so rate() over them has series from the start
        (dashboards and alerts would otherwise show "no data" until the first event)."""
        for pool in pools:
            self.pool_requests.labels(SERVICE, pool)
            self.upstream_retries.labels(SERVICE, pool)
            self.upstream_duration.labels(SERVICE, pool)
        for route in cached_routes:
            for result in ("hit", "miss", "error", "bypass"):
                self.cache_requests.labels(SERVICE, route, result)
        for from_pool, to in fallbacks:
            self.fallbacks.labels(SERVICE, from_pool, to)
        for kind in ("requests", "tokens", "auth"):
            self.rate_limited.labels(SERVICE, kind)
        self.redis_up.labels(SERVICE)
