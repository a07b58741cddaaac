"""Watch for a client that leaves while its request is being served, and cancel the work.

Without this a client that gave up left its generation running until the gateway's request
timeout (120 s): the backend never learned. :class:`Inbox` is the one reader of the ASGI
``receive`` channel; the pipeline reads the body from it as before, and when the client
disconnects it cancels the request's task. Cancelling closes the backend connection
(:mod:`services.gateway.h1` drops a half-read connection), and the model service cancels the
generation when its client goes (:mod:`modelfleet.decoding.streaming`). A request that leads a
cache single-flight is the exception by design: the shared call runs in its own task and goes on
for the requests that joined it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import Message, Receive


class Inbox:
    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._work: asyncio.Future[Any] | None = None
        self.client_left = False

    def watch(self, work: asyncio.Future[Any]) -> None:
        """Cancel ``work`` if the client disconnects before it is done."""
        self._work = work
        self._reader = asyncio.ensure_future(self._pump())

    async def receive(self) -> Message:
        return await self._queue.get()

    async def _pump(self) -> None:
        while True:
            message = await self._receive()
            self._queue.put_nowait(message)
            if message["type"] == "http.disconnect":
                if self._work is not None and not self._work.done():
                    self.client_left = True
                    self._work.cancel()
                return

    async def close(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
