"""Read the body and validate it with the route's request model, the one the services use.

The body is parsed once more into a dict (orjson) for what the later stages act on (``stream``,
``temperature``, the cache key, a fallback's conversion); it is forwarded byte for byte.
"""

from __future__ import annotations

import asyncio

import orjson

from modelfleet.asgi import read_body
from modelfleet.errors import InvalidRequest
from modelfleet.routes import INLINE_VALIDATE_BYTES, validate_body
from services.gateway.exchange import Exchange, Next, Outcome


class ReadBody:
    def __init__(self, *, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        model = ex.route.request
        if model is None:
            return await call_next(ex)
        ex.body = await read_body(ex.receive, self.max_body_bytes)
        # A ValidationError is the 400 the service would give; the validated value of `stream`
        # (a lax boolean, as the service reads it) decides how the answer is relayed.
        validated = await validate_body(model, ex.body)
        if len(ex.body) <= INLINE_VALIDATE_BYTES:
            payload = orjson.loads(ex.body)
        else:
            payload = await asyncio.to_thread(orjson.loads, ex.body)
        if not isinstance(payload, dict):  # the models are objects: unreachable, but typed
            raise InvalidRequest("request body must be a JSON object")
        ex.payload = payload
        ex.stream = ex.route.streams and getattr(validated, "stream", None) is True
        return await call_next(ex)
