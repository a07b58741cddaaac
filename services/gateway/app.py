"""The gateway's app factory. Nothing happens at import; the lifespan owns every resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.app import add_operational_routes, fleet_fastapi, json_response
from modelfleet.middleware import RequestContextMiddleware
from services.gateway.admission import Admission, AdmissionMiddleware
from services.gateway.auth import ApiKeys
from services.gateway.cache import ResponseCache
from services.gateway.discovery import Discovery, build_discovery
from services.gateway.endpoints import ENDPOINTS, CacheMode, Endpoint
from services.gateway.h1 import H1Pool
from services.gateway.health import HealthChecker
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import POOLS, Pool
from services.gateway.proxy import Gateway
from services.gateway.ratelimit import RateLimiter
from services.gateway.redisconn import RedisGuard
from services.gateway.routing import Router, build_router
from services.gateway.schemas import request_body_doc
from services.gateway.settings import GatewaySettings
from services.gateway.upstream import Reply, Upstream

log = logging.getLogger("modelfleet.gateway")

INFO_ROUTES = ("/v1/models", "/v1/fleet")


class Runtime:
    """What the lifespan builds and the routes use; empty until startup."""

    gateway: Gateway
    health: HealthChecker
    discovery: Discovery
    redis: RedisGuard
    cache: ResponseCache
    started = False


def create_app(
    settings: GatewaySettings,
    *,
    discovery: Discovery | None = None,
    router_factory: Callable[[], Router] | None = None,
) -> FastAPI:
    """Build the gateway app. ``discovery`` and ``router_factory`` replace the configured ones."""
    metrics = GatewayMetrics()
    metrics.zero(
        POOLS,
        [ep.path for ep in ENDPOINTS if ep.cache is not CacheMode.NEVER],
        [(ep.pool, ep.fallback.pool) for ep in ENDPOINTS if ep.fallback is not None]
        + [(ep.pool, "cache") for ep in ENDPOINTS if ep.cache is not CacheMode.NEVER],
    )
    make_router = router_factory or (lambda: build_router(settings.routing))
    pools = {
        name: Pool(
            name,
            make_router(),
            failure_threshold=settings.circuit_failure_threshold,
            open_s=settings.circuit_open_s,
            metrics=metrics,
            health_path=settings.pools()[name].health_path,
        )
        for name in POOLS
    }
    keys = ApiKeys(settings.all_api_keys())
    admission = Admission(
        keys,
        metrics,
        max_in_flight=settings.max_in_flight,
        max_body_bytes=settings.max_body_bytes,
    )
    rt = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if keys.open:
            log.warning("no API keys configured: the /v1 API is open to anyone who can reach it")
        # httpx for the control plane (health checks, model lists); the lean H1Pool forwards.
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=httpx.Timeout(settings.health_timeout_s),
            trust_env=False,
            follow_redirects=False,
        )
        rt.redis = RedisGuard(
            settings.redis_url,
            metrics,
            timeout_s=settings.redis_timeout_s,
            backoff_max_s=settings.redis_backoff_max_s,
        )
        rt.cache = ResponseCache(
            rt.redis,
            enabled=settings.cache_enabled,
            ttl_s=settings.cache_ttl_s,
            stale_ttl_s=settings.cache_stale_ttl_s,
            max_value_bytes=settings.cache_max_value_bytes,
        )
        limiter = RateLimiter(
            rt.redis, metrics, rpm=settings.rate_limit_rpm, tpm=settings.rate_limit_tpm
        )
        h1 = H1Pool(connect_timeout_s=settings.connect_timeout_s)
        upstream = Upstream(
            h1, retries=settings.retries, request_timeout_s=settings.request_timeout_s
        )
        rt.gateway = Gateway(
            pools,
            upstream,
            rt.cache,
            limiter,
            metrics,
            max_body_bytes=settings.max_body_bytes,
            retry_after_s=max(1.0, settings.health_interval_s),
        )
        rt.discovery = discovery or build_discovery(settings)
        rt.health = HealthChecker(
            pools,
            client,
            interval_s=settings.health_interval_s,
            timeout_s=settings.health_timeout_s,
            models_refresh_s=settings.models_refresh_s,
        )
        try:
            await rt.redis.start()
            await rt.discovery.start(pools)
            await rt.health.start()
            rt.started = True
            log.info(
                "gateway up",
                extra={p.name: [r.url for r in p.replicas.values()] for p in pools.values()},
            )
            yield
        finally:
            rt.started = False
            with contextlib.suppress(AttributeError):
                await rt.health.stop()
            with contextlib.suppress(AttributeError):
                await rt.discovery.stop()
            h1.close()
            await client.aclose()
            await rt.redis.close()

    app = fleet_fastapi(
        "modelfleet gateway",
        lifespan,
        description="One OpenAI-compatible API for the fleet's model pools. "
        "Responses may carry X-Cache (hit|miss|bypass) and X-Fleet-Degraded.",
    )

    def is_ready() -> bool:
        # Ready as soon as any pool can serve: a gateway with one working pool is useful, and
        # the per-pool state is in /v1/fleet. Redis is optional and does not count.
        return rt.started and any(p.available() for p in pools.values())

    add_operational_routes(app, metrics.render, is_ready)

    for ep in ENDPOINTS:
        app.add_api_route(
            ep.path,
            _forwarder(rt, ep),
            methods=["POST"],
            summary=ep.summary,
            tags=[ep.pool],
            openapi_extra=request_body_doc(ep.path),
            response_class=Response,
        )

    @app.get("/v1/models", summary="Models served by every pool, with their service")
    async def list_models() -> Response:
        data = [card for p in pools.values() for card in p.models()]
        return json_response({"object": "list", "data": data})

    @app.get("/v1/fleet", summary="Replicas of each pool: health, circuit, in-flight; the cache")
    async def fleet() -> Response:
        return json_response(_fleet(rt, pools, settings, admission))

    # Added first, so innermost: admission and request metrics still wrap the fast path.
    app.add_middleware(ForwardingMiddleware, runtime=rt)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        routes=[*(ep.path for ep in ENDPOINTS), *INFO_ROUTES],
        access_log_enabled=settings.access_log,
    )
    app.state.metrics = metrics
    app.state.pools = pools
    app.state.runtime = rt
    return app


class ForwardingMiddleware:
    """POSTs to the forwarded routes go straight to the gateway, in raw ASGI.

    FastAPI's routing, dependency solving and Request/Response objects would cost as much as
    the rest of the forwarding put together. The same routes are declared on the FastAPI app
    too, for the OpenAPI docs (and they serve, more slowly, if this middleware is left out).
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.endpoints = {ep.path: ep for ep in ENDPOINTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            ep = self.endpoints.get(scope["path"])
            if ep is not None:
                await self.runtime.gateway(ep, scope, receive, send)
                return
        await self.app(scope, receive, send)


def _forwarder(rt: Runtime, ep: Endpoint) -> Callable[[Request], Any]:
    async def forward(request: Request) -> Response:
        result = await rt.gateway.handle(ep, request.scope, request.receive)
        if isinstance(result, Reply):
            return Response(result.body, result.status, result.headers)
        return result

    forward.__name__ = ep.path.strip("/").replace("/", "_")
    return forward


def _fleet(
    rt: Runtime, pools: dict[str, Pool], settings: GatewaySettings, admission: Admission
) -> dict[str, Any]:
    return {
        "pools": {name: p.snapshot() for name, p in pools.items()},
        "admission": admission.snapshot(),
        "routing": settings.routing.value,
        "discovery": settings.discovery,
        "cache": rt.cache.snapshot() | {"single_flight_shared": rt.gateway.flights.shared},
    }
