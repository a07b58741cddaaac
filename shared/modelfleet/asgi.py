"""Reading a request body in raw ASGI, for the raw-ASGI routes (:mod:`modelfleet.routes`)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from modelfleet.errors import PayloadTooLarge


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
