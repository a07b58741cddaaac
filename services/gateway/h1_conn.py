"""One pooled HTTP/1.1 connection to a backend: an asyncio protocol around httptools' parser.

Split from :mod:`services.gateway.h1` (the pool and the request path); see there for why the
gateway carries its own client. This module owns the wire: framing, the head cap, the body cap,
back-pressure (reading pauses when a slow client lets a stream pile up) and the errors a broken
exchange raises.
"""

from __future__ import annotations

import asyncio
import collections
from typing import cast

import httptools

Headers = list[tuple[bytes, bytes]]

# Pause reading from a backend when a slow client lets this much of a stream pile up.
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
# A status line and headers larger than this are refused (the connection is dropped): the
# services' own heads are a few hundred bytes.
MAX_HEAD_BYTES = 64 << 10


class UpstreamConnectError(Exception):
    """No connection could be made; nothing was sent."""


class UpstreamDisconnected(Exception):
    """The connection broke before the response was complete."""


class UpstreamTimeout(Exception):
    """No (complete) response within the deadline."""


class UpstreamTooLarge(Exception):
    """The response body is over the pool's cap; nothing of it was kept (the gateway's 502)."""


class _Stray(Exception):
    """Bytes outside a request/response exchange: the connection can no longer be trusted."""


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self.head_bytes = 0
        self.status = 0
        self.headers: Headers = []
        self.complete = False
        self.keep_alive = False
        # A response is expected from send() until its end; any byte outside that (after the
        # end, or on an idle pooled connection) closes the connection, never reaching a client.
        self.expecting = False
        self.began = False
        self.max_body = 0  # 0 = no cap (streams are relayed, never buffered)
        self.body_bytes = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._head: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.expecting:
            self.close()  # stray bytes: a response nobody asked for, or after the response
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete and self._error is None:
                self._fail(UpstreamDisconnected(f"malformed response: {exc}"))
            # Complete: the answer stands, the bytes after it are dropped with the connection.
            self.close()
            return
        if not self.status:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamDisconnected(f"response head over {MAX_HEAD_BYTES} bytes"))
                self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamDisconnected("connection closed before the response completed"))

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.began or not self.expecting:
            raise _Stray("a second response in one exchange")
        self.began = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        wake(self._head)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.max_body and self.body_bytes > self.max_body:
            self._fail(UpstreamTooLarge(f"response body over {self.max_body} bytes"))
            raise _Stray("body over the cap")  # stops the parser; the connection is closed
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        wake(self._wake)

    def on_message_complete(self) -> None:
        # Only valid inside the callback: llhttp resets its state right after.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self.expecting = False
        wake(self._head)
        wake(self._wake)

    # -- used by the pool ----------------------------------------------------------------
    def send(self, data: bytes, max_body: int = 0) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            self.received_any = False
            raise UpstreamDisconnected("connection closed before the request was sent")
        self.received_any = False
        self.expecting = True
        self.began = False
        self.max_body = max_body
        self.body_bytes = 0
        self.head_bytes = 0
        self.status = 0
        self.headers = []
        self.complete = False
        self.keep_alive = False
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self.transport.write(data)

    async def read_head(self) -> None:
        if self.status or self.complete:
            return
        if self._error is not None:
            raise self._error
        self._head = asyncio.get_running_loop().create_future()
        try:
            await self._head
        finally:
            self._head = None
        if self._error is not None and not self.status:
            raise self._error

    async def read_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < LOW_WATER and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    async def read_body(self) -> bytes:
        parts = []
        while (chunk := await self.read_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        for fut in (self._head, self._wake):
            if fut is not None and not fut.done():
                fut.set_exception(exc)


def wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)
