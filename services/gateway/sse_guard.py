"""A relayed event stream that always ends cleanly, even when its replica dies mid-way.

Once a stream's status line has reached the client nothing can be retried, and closing the
connection half-way leaves the client with a truncated event and an exception (or, with some
SSE clients, a hang waiting for more). Instead the gateway ends the stream the way the model
services end a generation that fails: an OpenAI-shaped ``error`` event, then ``data: [DONE]``.

Events are relayed whole: a chunk is passed on up to its last event boundary and the rest is
held for the next read, so the client never sees half an event followed by the error event.
Backends write one event per chunk, so in practice nothing is held and nothing is delayed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson

from modelfleet.errors import error_body

log = logging.getLogger("modelfleet.gateway.sse")

DONE = b"data: [DONE]\n\n"
_BOUNDARY = b"\n\n"


def error_event(message: str, error_type: str = "upstream_error") -> bytes:
    return b"data: " + orjson.dumps(error_body(message, error_type)) + b"\n\n"


async def guard_sse(chunks: AsyncIterator[bytes], pool: str) -> AsyncIterator[bytes]:
    """``chunks`` event by event; a failure of the source ends it with an error event."""
    held = b""
    try:
        async for chunk in chunks:
            data = held + chunk if held else chunk
            cut = data.rfind(_BOUNDARY)
            if cut < 0:
                held = data
                continue
            cut += len(_BOUNDARY)
            held = data[cut:]
            yield data[:cut] if held else data
    except Exception as exc:  # the source failed: what the client has so far is whole events
        log.warning("%s stream broken mid-way: %r", pool, exc)
        yield error_event(f"the {pool} replica serving this stream failed; retry the request")
        yield DONE
        return
    if held:  # a stream that ended without a final boundary: pass what is left as it came
        yield held
