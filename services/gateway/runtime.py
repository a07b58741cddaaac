"""Everything one gateway process runs on, built without I/O; opened and closed by the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import start_http_server
from starlette.requests import Request

from modelfleet.api import FLEET_ROUTES, POOLS, CacheMode
from modelfleet.errors import FleetError
from services.gateway.auth import ApiKeys
from services.gateway.cache import ResponseCache
from services.gateway.discovery import Discovery, build_discovery
from services.gateway.fallback import FALLBACKS
from services.gateway.h1 import H1Pool
from services.gateway.health import HealthChecker
from services.gateway.metrics import GatewayMetrics
from services.gateway.pipeline import Pipeline
from services.gateway.pools import Pool
from services.gateway.ratelimit import RateLimiter
from services.gateway.redisconn import RedisGuard
from services.gateway.routing import Router, build_router
from services.gateway.settings import GatewaySettings
from services.gateway.stages.admit import Admit
from services.gateway.stages.authenticate import Authenticate, single_authorization
from services.gateway.stages.cache_lookup import CacheLookup
from services.gateway.stages.fall_back import FallBack
from services.gateway.stages.forward import Forward
from services.gateway.stages.limit import Limit
from services.gateway.stages.read import ReadBody
from services.gateway.upstream import Upstream

log = logging.getLogger("modelfleet.gateway")


class GatewayRuntime:
    def __init__(
        self,
        settings: GatewaySettings,
        discovery: Discovery | None = None,
        router_factory: Callable[[], Router] | None = None,
    ) -> None:
        s = self.settings = settings
        self.metrics = metrics = GatewayMetrics()
        cached = [r for r in FLEET_ROUTES if r.cache is not CacheMode.NEVER]
        metrics.zero(
            POOLS,
            [r.path for r in cached],
            [(r.pool, fb.pool) for r in FLEET_ROUTES if (fb := FALLBACKS.get(r.path))]
            + [(r.pool, "cache") for r in cached],
        )
        make_router = router_factory or (lambda: build_router(s.routing))
        self.pools = {
            name: Pool(
                name,
                make_router(),
                failure_threshold=s.circuit_failure_threshold,
                open_s=s.circuit_open_s,
                metrics=metrics,
                health_path=s.pools()[name].health_path,
            )
            for name in POOLS
        }
        self.keys = ApiKeys(s.all_api_keys())
        self.redis = RedisGuard(
            s.redis_url.get_secret_value(),
            metrics,
            timeout_s=s.redis_timeout_s,
            backoff_max_s=s.redis_backoff_max_s,
        )
        self.cache = ResponseCache(
            self.redis,
            enabled=s.cache_enabled,
            ttl_s=s.cache_ttl_s,
            stale_ttl_s=s.cache_stale_ttl_s,
            max_value_bytes=s.cache_max_value_bytes,
        )
        # The lean H1Pool forwards; httpx serves the control plane (health checks, model lists).
        self.h1 = H1Pool(
            connect_timeout_s=s.connect_timeout_s, max_response_bytes=s.max_response_bytes
        )
        self.upstream = Upstream(self.h1, retries=s.retries, request_timeout_s=s.request_timeout_s)
        self.control = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=httpx.Timeout(s.health_timeout_s),
            trust_env=False,
            follow_redirects=False,
        )
        self.discovery = discovery or build_discovery(s)
        self.health = HealthChecker(
            self.pools,
            self.control,
            interval_s=s.health_interval_s,
            timeout_s=s.health_timeout_s,
            models_refresh_s=s.models_refresh_s,
        )
        self.admit = Admit(max_in_flight=s.max_in_flight, max_body_bytes=s.max_body_bytes)
        self.cache_lookup = CacheLookup(
            self.cache, self.pools, metrics, frozenset(s.cache_shared_routes)
        )
        retry_after_s = max(1.0, s.health_interval_s)
        limiter = RateLimiter(
            self.redis,
            metrics,
            rpm=s.rate_limit_rpm,
            tpm=s.rate_limit_tpm,
            fail_mode=s.rate_limit_fail_mode,
        )
        # The request path, in order: see services/gateway/pipeline.py.
        self.pipeline = Pipeline([
            Authenticate(self.keys, metrics),
            self.admit,
            ReadBody(max_body_bytes=s.max_body_bytes),
            Limit(limiter, metrics, s.rate_limit_default_completion_tokens),
            self.cache_lookup,
            FallBack(self.pools, self.upstream, metrics, retry_after_s=retry_after_s),
            Forward(self.pools, self.upstream),
        ])  # fmt: skip
        self.started = False

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Start everything; ``stack`` closes each, in reverse, however far startup got."""
        if self.keys.open:
            log.warning("no API keys configured: the /v1 API is open to anyone who can reach it")
        if self.settings.metrics_port:
            # /metrics alone on its own port (a thread: scrapes are rare and tiny).
            server, _ = start_http_server(
                self.settings.metrics_port, self.settings.host, self.metrics.registry
            )
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
        stack.push_async_callback(self.control.aclose)
        stack.callback(self.h1.close)
        stack.push_async_callback(self.redis.close)
        await self.redis.start()
        stack.push_async_callback(self.discovery.stop)
        await self.discovery.start(self.pools)
        stack.push_async_callback(self.health.stop)
        await self.health.start()
        self.started = True
        stack.callback(setattr, self, "started", False)
        urls = {p.name: [r.url for r in p.replicas.values()] for p in self.pools.values()}
        log.info("gateway up", extra=urls)

    def ready(self) -> bool:
        # Ready as soon as any pool can serve: a gateway with one working pool is useful, and
        # the per-pool state is in /v1/fleet. Redis is optional and does not count.
        return self.started and any(p.available() for p in self.pools.values())

    def authenticate_request(self, request: Request) -> None:
        """The API-key check of the gateway's own /v1 routes (the pipeline has its own stage)."""
        value = single_authorization(request.scope["headers"])
        if self.keys.open:
            return
        try:
            self.keys.identify(value)
        except FleetError:
            self.metrics.refused("auth")
            raise

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [c for p in self.pools.values() for c in p.models()]}

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": {name: p.snapshot() for name, p in self.pools.items()},
            "admission": self.admit.snapshot()
            | {"auth": "open" if self.keys.open else f"{len(self.keys)} keys"},
            "routing": self.settings.routing.value,
            "discovery": self.settings.discovery,
            "cache": self.cache.snapshot()
            | {"single_flight_shared": self.cache_lookup.flights.shared},
        }
