"""Write the response: a complete reply in two ASGI messages, a stream through starlette's
StreamingResponse (which notices a client that leaves and stops reading the backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.exchange import Outcome, Reply, Streamed


async def write(outcome: Outcome, scope: Scope, receive: Receive, send: Send) -> None:
    if isinstance(outcome, Reply):
        await send_reply(send, outcome)
        return
    response = StreamingResponse(stream_body(outcome), outcome.status, outcome.headers)
    try:
        await response(scope, receive, send)
    finally:
        await outcome.finish()  # also when the body was never iterated


async def stream_body(streamed: Streamed) -> AsyncIterator[bytes]:
    try:
        async for chunk in streamed.chunks:
            yield chunk
    finally:
        await streamed.finish()


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-length", b"%d" % len(reply.body))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
