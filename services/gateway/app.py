"""The gateway's app factory. Nothing happens at import; the lifespan opens every resource."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import Depends, FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp

from modelfleet.app import add_operational_routes, find_model, fleet_fastapi, json_response
from modelfleet.middleware import RequestContextMiddleware
from modelfleet.routes import RouteTable
from modelfleet.trace_asgi import instrument
from services.gateway.discovery import Discovery
from services.gateway.routing import Router
from services.gateway.runtime import GatewayRuntime
from services.gateway.settings import GatewaySettings

DESCRIPTION = (
    "One OpenAI-compatible API for the fleet's model pools. "
    "Responses may carry X-Cache (hit|miss|bypass) and X-Fleet-Degraded."
)


def create_app(
    settings: GatewaySettings,
    *,
    discovery: Discovery | None = None,
    router_factory: Callable[[], Router] | None = None,
) -> ASGIApp:
    """Build the gateway app. ``discovery`` and ``router_factory`` replace the configured ones."""
    rt = GatewayRuntime(settings, discovery, router_factory)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await rt.open(stack)
            yield

    app = fleet_fastapi(
        "modelfleet gateway", lifespan, description=DESCRIPTION, docs=settings.docs_enabled()
    )
    add_operational_routes(app, rt.metrics.render, rt.ready, metrics=not settings.metrics_port)
    table = RouteTable(app, rt.pipeline.routes(), max_body=settings.max_body_bytes)

    keyed = [Depends(rt.authenticate_request)]

    @app.get("/v1/models", summary="Models of every pool, with their service", dependencies=keyed)
    async def list_models() -> Response:
        return json_response(rt.models())

    @app.get("/v1/models/{model_id:path}", summary="One model of the fleet", dependencies=keyed)
    async def retrieve_model(model_id: str) -> Response:
        return json_response(find_model(rt.models()["data"], model_id))

    @app.get("/v1/fleet", summary="Replicas, circuits and in-flight per pool", dependencies=keyed)
    async def fleet() -> Response:
        return json_response(rt.snapshot())

    paths = [*table.paths, "/v1/models", "/v1/fleet"]
    return instrument(
        RequestContextMiddleware(
            table, metrics=rt.metrics, routes=paths, access_log_enabled=settings.access_log
        )
    )
