"""HTTP plumbing for generations: SSE responses, merged streams, disconnect-aware waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from modelfleet.decoding.handles import Chunk, Completion, Generation
from modelfleet.decoding.openai import SSE_DONE, sse
from modelfleet.errors import FleetError, error_body

log = logging.getLogger("modelfleet.decoding.streaming")

T = TypeVar("T")

_DISCONNECT_POLL_S = 0.25


class ClientClosedRequest(FleetError):
    """The client went away before its answer was ready (nginx's 499); nobody reads the body."""

    status_code = 499
    error_type = "client_closed_request"


def sse_response(
    events: AsyncIterator[bytes], generations: Sequence[Generation]
) -> StreamingResponse:
    """A ``text/event-stream`` response; a client that leaves cancels ``generations``."""
    return StreamingResponse(
        _guarded(events, generations),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _guarded(
    events: AsyncIterator[bytes], generations: Sequence[Generation]
) -> AsyncIterator[bytes]:
    # Headers are sent by now, so a failure becomes an error event, then the end of stream.
    # Starlette cancels this generator when the client disconnects; the finally frees the slots
    # even if the disconnect came before the first event.
    try:
        async for event in events:
            yield event
    except FleetError as exc:
        yield sse(exc.body())
        yield SSE_DONE
    except Exception as exc:
        log.exception("stream failed")
        yield sse(error_body(f"generation failed: {exc}", "server_error"))
        yield SSE_DONE
    finally:
        for gen in generations:
            gen.cancel()


async def merged(generations: Sequence[Generation]) -> AsyncIterator[tuple[int, Chunk]]:
    """Chunks of several generations as they come, tagged with the generation's index."""
    if len(generations) == 1:
        async for chunk in generations[0]:
            yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, gen: Generation) -> None:
        try:
            async for chunk in gen:
                queue.put_nowait((i, chunk))
        except BaseException as exc:
            queue.put_nowait((i, exc))
            raise
        queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        for gen in generations:
            gen.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it (and so its generations) if the client disconnects meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientClosedRequest("client disconnected; generation cancelled")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def collect_all(request: Request, generations: Sequence[Generation]) -> list[Completion]:
    """Every generation's full text; all are cancelled if the client disconnects."""
    try:
        return await unless_disconnected(
            request, asyncio.gather(*(g.collect() for g in generations))
        )
    finally:
        for gen in generations:
            gen.cancel()
