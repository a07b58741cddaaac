"""Pools of backend replicas: membership, health, circuit state and the model identity.

Membership comes from discovery (static URLs or Kubernetes EndpointSlices); health from the
active checker and from passive failures (the circuit breaker). A replica takes traffic only
when it is healthy and its circuit allows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelfleet.api import POOLS as FLEET_POOLS
from services.gateway.circuit import CircuitBreaker, CircuitState
from services.gateway.h1 import Origin
from services.gateway.metrics import SERVICE, GatewayMetrics

if TYPE_CHECKING:
    from services.gateway.routing import Router

log = logging.getLogger("modelfleet.gateway.pools")

POOLS = FLEET_POOLS


class Replica:
    """One backend process, addressed by its base URL (``http://host:port``)."""

    __slots__ = ("_endpoints", "_prefix", "_targets", "breaker", "check_timeouts", "healthy",
                 "in_flight", "last_check", "last_error", "models", "models_at", "origin",
                 "url")  # fmt: skip

    def __init__(self, url: str, breaker: CircuitBreaker, healthy: bool = False) -> None:
        self.url = url.rstrip("/")
        self.origin = Origin.parse(self.url)
        self._prefix = urlsplit(self.url).path.encode()
        self._targets: dict[str, bytes] = {}
        self.breaker = breaker
        self.healthy = healthy
        self.check_timeouts = 0
        self.in_flight = 0
        self.models: list[dict[str, Any]] = []
        self.models_at = 0.0
        self.last_check = 0.0
        self.last_error: str | None = None
        self._endpoints: dict[str, str] = {}

    def endpoint(self, path: str) -> str:
        url = self._endpoints.get(path)
        if url is None:
            url = self._endpoints[path] = self.url + path
        return url

    def target(self, path: str) -> bytes:
        """The request target for ``path`` on this replica (base path included)."""
        t = self._targets.get(path)
        if t is None:
            t = self._targets[path] = self._prefix + path.encode()
        return t

    def eligible(self) -> bool:
        return self.healthy and self.breaker.available()

    def snapshot(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "circuit": self.breaker.state.name.lower(),
            "consecutive_failures": self.breaker.failures,
            "in_flight": self.in_flight,
            "models": [f"{m.get('id')}@{m.get('revision')}" for m in self.models],
            "last_check_age_s": round(time.monotonic() - self.last_check, 1)
            if self.last_check
            else None,
            "last_error": self.last_error,
        }


class Pool:
    """The replicas of one service and the strategy that picks among them."""

    def __init__(
        self,
        name: str,
        router: Router,
        *,
        failure_threshold: int,
        open_s: float,
        metrics: GatewayMetrics,
        health_path: str = "/ready",
    ) -> None:
        self.name = name
        self.router = router
        self.health_path = health_path
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.metrics = metrics
        self.replicas: dict[str, Replica] = {}
        # The model identity keys the cache; kept after every replica is gone so a stale
        # answer can still be found while the pool is down.
        self.identity = "unknown"
        self.upstream_duration = metrics.upstream_duration.labels(SERVICE, name)
        self.retries = metrics.upstream_retries.labels(SERVICE, name)

    # -- membership ----------------------------------------------------------------------
    def set_urls(self, urls: Iterable[str], *, assume_healthy: bool = False) -> list[Replica]:
        """Replace the membership; keeps the state of replicas still present, returns new ones.

        ``assume_healthy`` is for Kubernetes, where an endpoint is listed only once its pod
        passed its own readiness probe; static URLs wait for the first health check.
        """
        wanted = {u.rstrip("/") for u in urls if u}
        added = []
        for url in list(self.replicas):
            if url not in wanted:
                del self.replicas[url]
                self.metrics.backend_up.remove(SERVICE, self.name, url)
                self.metrics.circuit_state.remove(SERVICE, self.name, url)
                log.info("%s replica removed: %s", self.name, url, extra={"pool": self.name})
        for url in sorted(wanted - self.replicas.keys()):
            replica = Replica(url, self._breaker(url), healthy=assume_healthy)
            self.replicas[url] = replica
            self.publish(replica)
            added.append(replica)
            log.info("%s replica added: %s", self.name, url, extra={"pool": self.name})
        return added

    def _breaker(self, url: str) -> CircuitBreaker:
        gauge = self.metrics.circuit_state.labels(SERVICE, self.name, url)

        def changed(state: CircuitState) -> None:
            gauge.set(int(state))
            log.warning(
                "%s replica %s: circuit %s", self.name, url, state.name.lower(),
                extra={"pool": self.name, "replica": url},
            )  # fmt: skip

        return CircuitBreaker(self.failure_threshold, self.open_s, on_change=changed)

    # -- routing -------------------------------------------------------------------------
    def candidates(self, exclude: Collection[Replica] = ()) -> list[Replica]:
        return [r for r in self.replicas.values() if r not in exclude and r.eligible()]

    def pick(self, exclude: Collection[Replica] = ()) -> Replica | None:
        candidates = self.candidates(exclude)
        if not candidates:
            return None
        replica = self.router.pick(candidates)
        replica.breaker.acquire()
        return replica

    def available(self) -> bool:
        return any(r.eligible() for r in self.replicas.values())

    def healthy_count(self) -> int:
        return sum(1 for r in self.replicas.values() if r.healthy)

    # -- state ---------------------------------------------------------------------------
    def publish(self, replica: Replica) -> None:
        self.metrics.backend_up.labels(SERVICE, self.name, replica.url).set(int(replica.healthy))
        self.metrics.circuit_state.labels(SERVICE, self.name, replica.url).set(
            int(replica.breaker.state)
        )

    def refresh_identity(self) -> None:
        """Name + revision of the model(s) the healthy replicas report, in a stable order."""
        for only_healthy in (True, False):
            found = sorted(
                {
                    f"{m.get('id')}@{m.get('revision')}"
                    for r in self.replicas.values()
                    if r.healthy or not only_healthy
                    for m in r.models
                }
            )
            if found:
                self.identity = ",".join(found)
                return

    def models(self) -> list[dict[str, Any]]:
        """The distinct models this pool serves, for ``GET /v1/models``."""
        seen: dict[tuple[Any, Any], dict[str, Any]] = {}
        for r in self.replicas.values():
            for m in r.models:
                key = (m.get("id"), m.get("revision"))
                card = seen.setdefault(
                    key, {**m, "service": self.name, "replicas": 0, "ready": False}
                )
                card["replicas"] += 1
                card["ready"] = card["ready"] or r.healthy
        return list(seen.values())

    def serves(self, model: str) -> bool:
        return any(m.get("id") == model for r in self.replicas.values() for m in r.models)

    def snapshot(self) -> dict[str, Any]:
        return {
            "replicas": [r.snapshot() for r in self.replicas.values()],
            "healthy": self.healthy_count(),
            "available": self.available(),
            "model_identity": self.identity,
        }


def pool_for_model(pools: dict[str, Pool], default: str, model: object) -> Pool:
    """The pool whose replicas report ``model`` (``/tokenize``, ``/detokenize``); with no model
    named, ``default``, else the first pool that can serve at all (as vLLM, which serves one).
    404 ``model_not_found`` for a model no pool reports."""
    from modelfleet.tokenize import model_not_found

    if isinstance(model, str) and model:
        for pool in pools.values():
            if pool.serves(model):
                return pool
        raise model_not_found(model)
    order = [pools[default], *(p for p in pools.values() if p.name != default)]
    return next((p for p in order if p.available()), pools[default])
