"""A process's route table: each route declared once, served and documented from that entry.

Every :class:`Route` becomes a FastAPI route, so it appears in ``/openapi.json`` with the request
model of its :class:`~modelfleet.api.RouteSpec`. A route marked ``raw=True`` is, in addition,
compiled to a raw-ASGI handler that the table serves itself: FastAPI's per-request machinery
(routing, dependency solving, body parameters) costs several hundred microseconds, which on an
encoder comes straight out of the cores the forward passes need. The raw handler validates the
body with the same model (``model_validate_json``) and calls the same handler, so the documented
route and the served route cannot drift apart.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.api import RouteSpec
from modelfleet.asgi import read_body
from modelfleet.errors import PayloadTooLarge, exception_response

# (validated body or None, the request) -> the response. The request gives access to the raw
# bytes (``await request.body()``, already read) and to disconnects.
Handler = Callable[[Any, Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    spec: RouteSpec
    handler: Handler
    raw: bool = False  # serve on the raw-ASGI fast path (see the module docstring)
    # The raw path's own ASGI handler (the gateway's pipeline); by default the table compiles
    # one from ``handler`` and the spec's request model.
    asgi: ASGIApp | None = None


def content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def read_request_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, refused with 413 from its Content-Length alone when that is over ``limit``."""
    declared = content_length(scope)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body over the {limit}-byte limit")
    return await read_body(receive, limit)


# Parsing and validating this much JSON can take milliseconds (a list of thousands of items):
# larger bodies are validated on a worker thread, so one request never stalls the event loop.
INLINE_VALIDATE_BYTES = 64 << 10


async def validate_body(model: type[BaseModel], raw: bytes) -> Any:
    """``model.model_validate_json(raw)``, off the event loop when ``raw`` is large."""
    if len(raw) <= INLINE_VALIDATE_BYTES:
        return model.model_validate_json(raw)
    return await asyncio.to_thread(model.model_validate_json, raw)


def _with_lone_surrogates(model: type[BaseModel], raw: bytes, exc: ValidationError) -> Any:
    """The body validated from stdlib JSON when the fast parser refused a lone surrogate.

    JSON may escape one (``"\\ud800"``) and the fast parser calls that invalid JSON, with no
    field to name; parsed leniently, the service refuses it with a 400 naming the field that
    holds it (``DecoderService``'s Unicode check). Any other validation error stands."""
    errors = exc.errors(include_url=False, include_input=False)
    if not (errors and errors[0]["type"] == "json_invalid" and "hex escape" in errors[0]["msg"]):
        raise exc
    try:
        data = json.loads(raw)
    except ValueError:
        raise exc from None
    return model.model_validate(data)


class RouteTable:
    """Registers ``routes`` on ``app`` and serves the raw ones; everything else goes to ``app``."""

    def __init__(self, app: FastAPI, routes: Sequence[Route], *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body
        self.routes = tuple(routes)
        self.raw: dict[tuple[str, str], Route] = {}
        for route in self.routes:
            spec = route.spec
            app.add_api_route(
                spec.path,
                _endpoint(route),
                methods=[spec.method],
                summary=spec.summary,
                tags=[spec.pool],
                response_class=Response,
            )
            if route.raw:
                self.raw[(spec.method, spec.path)] = route

    @property
    def paths(self) -> list[str]:
        return [r.spec.path for r in self.routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.raw.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if route.asgi is not None:
            await route.asgi(scope, receive, send)
            return
        try:
            response = await self.serve_raw(route, scope, receive)
        except ClientDisconnect:
            return
        except Exception as exc:
            response = exception_response(exc)
        await response(scope, receive, send)

    async def serve_raw(self, route: Route, scope: Scope, receive: Receive) -> Response:
        model = route.spec.request
        request = Request(scope, receive)
        if model is None:
            return await route.handler(None, request)
        raw = await read_request_body(scope, receive, self.max_body)
        request._body = raw  # starlette's cache: request.body() returns it without reading
        try:
            body = await validate_body(model, raw)
        except ValidationError as exc:
            body = _with_lone_surrogates(model, raw, exc)
        return await route.handler(body, request)


def _endpoint(route: Route) -> Callable[..., Awaitable[Response]]:
    """The FastAPI endpoint of ``route``: its signature carries the spec's request model."""
    model = route.spec.request
    handler = route.handler

    async def endpoint(request: Request, body: Any = None) -> Response:
        return await handler(body, request)

    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    if model is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=model))
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    endpoint.__name__ = route.spec.path.strip("/").replace("/", "_") or "root"
    return endpoint
