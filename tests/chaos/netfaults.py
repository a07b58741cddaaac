"""In-test network faults no real process produces on demand: a TCP proxy that adds latency
(in front of a real Redis), and a backend that answers health checks but garbage to requests.

Both run an asyncio loop in a daemon thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import orjson

from tests.support.procs import free_port


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: object, timeout: float = 10.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class LatencyProxy:
    """``127.0.0.1:port`` -> ``127.0.0.1:target``, each chunk delayed by ``delay_s``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay_s = 0.0
        self._lt = _LoopThread()
        self._server: asyncio.Server | None = None
        self._lt.call(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def close(self) -> None:
        if self._server is not None:
            self._lt.loop.call_soon_threadsafe(self._server.close)
        self._lt.close()


class GarbageBackend:
    """Healthy to the gateway's checks (``/ready``, ``/v1/models``); POSTs get ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.posts = 0
        self._lt = _LoopThread()
        self._server: asyncio.Server | None = None
        self._lt.call(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if method == b"GET":
                    card = {"id": "garbage", "object": "model", "revision": "r1", "ready": True}
                    body = orjson.dumps({"object": "list", "data": [card], "status": "ok"})
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                    await writer.drain()
                    continue
                self.posts += 1
                writer.write(self.reply)
                await writer.drain()
                writer.close()
                return

    def close(self) -> None:
        if self._server is not None:
            self._lt.loop.call_soon_threadsafe(self._server.close)
        self._lt.close()


@contextlib.contextmanager
def garbage_backend(reply: bytes) -> Iterator[GarbageBackend]:
    g = GarbageBackend(reply)
    try:
        yield g
    finally:
        g.close()


@contextlib.contextmanager
def latency_proxy(target_port: int) -> Iterator[LatencyProxy]:
    p = LatencyProxy(target_port)
    try:
        yield p
    finally:
        p.close()
