"""The hot-path HTTP/1.1 client against real sockets: keep-alive, streaming, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from services.gateway.h1 import (
    H1Pool,
    Origin,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
)
from tests.support.procs import Proc, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, Origin]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Origin.parse(f"http://127.0.0.1:{port}")


def test_keep_alive_connection_is_reused_and_request_is_well_formed() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(OK)

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        for _ in range(3):
            r = await pool.request(
                origin, b"POST", b"/v1/x", b'{"a":1}', b"X-Request-ID: r1\r\n", 5
            )
            assert (r.status, r.body) == (200, b"{}")
        assert pool.opened == 1
        pool.close()
        server.close()

    asyncio.run(main())
    assert len(seen) == 3
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"X-Request-ID: r1" in head and b"Content-Length: 7" in head and body == b'{"a":1}'


def test_a_keep_alive_connection_closed_by_the_server_is_retried_on_a_fresh_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answer the first request of each connection; drop the connection on the second,
        # as a server closing an idle keep-alive connection at the wrong moment does.
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.transport.abort()

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        for _ in range(3):
            assert (await pool.request(origin, b"POST", b"/", b"{}", b"", 5)).status == 200
        assert pool.opened == 3
        pool.close()
        server.close()

    asyncio.run(main())


def test_connect_refused_is_a_connect_error() -> None:
    async def main() -> None:
        pool = H1Pool(connect_timeout_s=1)
        with pytest.raises(UpstreamConnectError):
            await pool.request(
                Origin.parse(f"http://127.0.0.1:{free_port()}"), b"POST", b"/", b"", b"", 5
            )

    asyncio.run(main())


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def main() -> None:
        gone = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await reader.read()  # until the client hangs up
            gone.set()

        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 0.3)
        assert 0.25 < time.monotonic() - t0 < 2
        await asyncio.wait_for(gone.wait(), 2)
        assert pool.idle_count() == 0
        server.close()

    asyncio.run(main())


def test_connection_lost_mid_body_is_a_disconnect() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{partial")
        await writer.drain()
        writer.transport.abort()

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        with pytest.raises(UpstreamDisconnected):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        server.close()

    asyncio.run(main())


def test_stream_yields_each_chunk_as_it_arrives(fake_openai: Proc) -> None:
    async def main() -> list[float]:
        pool = H1Pool(connect_timeout_s=1)
        origin = Origin.parse(fake_openai.url)
        s = await pool.stream(origin, b"POST", b"/v1/completions", b'{"stream":true}', b"", 5, 5)
        assert s.status == 200
        arrivals = []
        t0 = time.monotonic()
        async for chunk in s.chunks():
            if chunk.startswith(b"data: {"):
                arrivals.append(time.monotonic() - t0)
        assert pool.idle_count() == 1, "a finished stream returns its connection"
        pool.close()
        return arrivals

    arrivals = asyncio.run(main())
    assert len(arrivals) == 5
    # 0.2 s between the backend's chunks: they come one by one, not all at the end.
    assert arrivals[0] < 0.3 and arrivals[-1] > 0.7


def test_sweep_forgets_origins_whose_connections_closed_or_expired() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1, keepalive_expiry_s=0.05)
        await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert pool.idle_count() == 1
        # Past the 50 ms keepalive expiry, the thing under test: nothing marks the moment a
        # connection expires, and a sleep never ends early, so this cannot flake.
        await asyncio.sleep(0.1)
        pool.sweep()
        assert pool.idle_count() == 0 and not pool._idle
        server.close()

    asyncio.run(main())
