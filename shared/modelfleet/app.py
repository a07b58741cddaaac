"""The app factory and process entry point shared by every model service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp

from modelfleet.devices import reproducible_cpu_math
from modelfleet.errors import FleetError, ModelNotReady, error_response, install_error_handlers
from modelfleet.logs import configure_logging
from modelfleet.memory import tune_allocator
from modelfleet.metrics import CONTENT_TYPE
from modelfleet.middleware import RequestContextMiddleware
from modelfleet.routes import RouteTable
from modelfleet.service import ModelService
from modelfleet.settings import ServiceSettings, load_settings
from modelfleet.tokenize import model_not_found, tokenize_routes
from modelfleet.trace_asgi import instrument
from modelfleet.tracing import configure as configure_tracing

log = logging.getLogger("modelfleet.app")


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Serialise with orjson: faster than FastAPI's encoder on the hot path, and numpy-aware."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def find_model(cards: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    """The card of ``model_id`` (``GET /v1/models/{id}``), or OpenAI's 404."""
    for card in cards:
        if card.get("id") == model_id:
            return card
    raise model_not_found(model_id)


def add_operational_routes(
    app: FastAPI,
    render_metrics: Callable[[], bytes],
    is_ready: Callable[[], bool],
    *,
    metrics: bool = True,
) -> None:
    """``/health`` (liveness), ``/ready`` (readiness) and, unless served on a port of its own
    (``metrics=False``), ``/metrics``."""

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        if is_ready():
            return json_response({"status": "ready"})
        return error_response(ModelNotReady("not ready", retry_after=5))

    if not metrics:
        return

    @app.get("/metrics", include_in_schema=False)
    async def render() -> Response:
        return Response(render_metrics(), media_type=CONTENT_TYPE)


def fleet_fastapi(
    title: str, lifespan: Any, description: str = "", *, docs: bool = True
) -> FastAPI:
    """A FastAPI app as every fleet process builds it, with the one error mapping installed.

    ``docs=False`` (production, see ``DOCS``) serves neither /docs nor /openapi.json."""
    app = FastAPI(
        title=title,
        description=description,
        # Accept JSON bodies whatever Content-Type says: curl -d and some clients omit it.
        strict_content_type=False,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans would duplicate the server span every fleet process
        # makes itself (modelfleet.trace_asgi), on raw and FastAPI routes alike; Prometheus has
        # the metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    install_error_handlers(app)
    return app


def create_app(service: ModelService) -> ASGIApp:
    """Build the ASGI app for one model service. Does no work until the lifespan runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background so /health answers (and /ready says 503) while the model loads.
        task = asyncio.create_task(_start(service), name="model-load")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await service.stop()

    app = fleet_fastapi(
        f"modelfleet {service.name}", lifespan, docs=service.settings.docs_enabled()
    )
    add_operational_routes(app, service.metrics.render, lambda: service.ready)

    @app.get("/v1/models", summary="List the served model")
    async def list_models() -> Response:
        return json_response({"object": "list", "data": service.model_cards()})

    @app.get("/v1/models/{model_id:path}", summary="One served model")
    async def retrieve_model(model_id: str) -> Response:
        return json_response(find_model(service.model_cards(), model_id))

    s = service.settings
    # Every POST route is served raw (modelfleet.routes): the body is capped by MAX_BODY_BYTES
    # from Content-Length before it is read, and while it is read.
    routes = [*service.routes(), *tokenize_routes(service)]
    table = RouteTable(app, routes, max_body=s.max_body_bytes)
    app.state.service = service
    # Outside FastAPI's own middleware stack: the request id, metrics and access log wrap every
    # request, the raw routes included; the trace span (when tracing is on) wraps those.
    return instrument(
        RequestContextMiddleware(
            table,
            metrics=service.metrics,
            routes=["/v1/models", *table.paths],
            access_log_enabled=s.access_log,
        )
    )


async def _start(service: ModelService) -> None:
    try:
        await service.start()
    except asyncio.CancelledError:
        raise
    except BaseException:
        # The exception text (paths, hosts, tokens in URLs) goes to the log, not to clients.
        service.failed = "model failed to load (see the service's log)"
        log.exception("model failed to load; shutting down")
        # A pod that can never become ready should restart, not sit unready forever.
        os.kill(os.getpid(), signal.SIGTERM)


def uvicorn_config(app: ASGIApp, settings: ServiceSettings, graceful_s: float) -> uvicorn.Config:
    """uvicorn on uvloop/httptools as every fleet process runs it."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=int(graceful_s),
        timeout_keep_alive=30,
        # Proxy headers only from configured proxies: trusted from anyone (uvicorn trusts
        # 127.0.0.1 by default, where sidecars connect), X-Forwarded-For names any client it
        # likes and walks around per-address rate limits.
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or None,
    )


def run_server(app: ASGIApp, settings: ServiceSettings, graceful_s: float = 30.0) -> None:
    """Serve ``app`` with uvicorn on uvloop/httptools, logs already configured."""
    tune_allocator(settings.malloc_mmap_threshold, settings.malloc_arena_max)
    uvicorn.Server(uvicorn_config(app, settings, graceful_s)).run()


def serve(
    service_cls: type[ModelService],
    settings_cls: type[ServiceSettings],
    settings: ServiceSettings | None = None,
) -> None:
    """``main()`` of a model service: settings from env, logging, app, uvicorn."""
    reproducible_cpu_math()
    settings = settings or load_settings(settings_cls)
    configure_logging(service_cls.name, settings.log_level, settings.log_json)
    configure_tracing(service_cls.name, settings.otlp_endpoint, settings.trace_sample_ratio)
    try:
        service = service_cls(settings)  # type: ignore[arg-type]
    except FleetError as exc:
        print(f"{service_cls.name}: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    run_server(create_app(service), settings, graceful_s=settings.shutdown_grace_s)
