"""Raw-ASGI pieces for hot paths: reading a body, and serving JSON POST routes without FastAPI.

FastAPI's per-request machinery (middleware stack, routing, dependency solving, body parameters)
costs several hundred microseconds of event-loop time. On an encoder service that time comes
straight out of the cores the forward passes need, so the inference routes are served by
:class:`FastRoutes`: the body is read here, validated by the same pydantic model in one
``model_validate_json`` call, and handed to the same handler the FastAPI route would call. The
FastAPI route stays registered for OpenAPI and ``/docs``; errors go through the one error model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.errors import PayloadTooLarge, exception_response

JsonHandler = Callable[[bytes], Awaitable[Response]]


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or :class:`PayloadTooLarge` past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over the {limit}-byte limit")
        if not message.get("more_body"):
            if not chunks:
                return chunk  # the common case: one message, no copy
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


class FastRoutes:
    """Serve ``POST path`` for the paths in ``handlers`` directly; pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, handlers: Mapping[str, JsonHandler], max_body: int) -> None:
        self.app = app
        self.handlers = dict(handlers)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(await read_body(receive, self.max_body))
        except ClientDisconnect:
            return
        except Exception as exc:
            response = exception_response(exc)
        await response(scope, receive, send)
