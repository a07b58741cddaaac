"""Hostile upstream answers against h1.py (security review, finding 4).

The fake upstream is a raw asyncio TCP server: no real model service can be made to send bytes
after its response, a stray response between requests, or a body of hundreds of megabytes on
demand, and these are exactly what a compromised or buggy backend (or something in between)
would send.
"""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.h1 import H1Pool, UpstreamTooLarge
from tests.gateway.test_h1 import OK, read_request, serve
from tests.gateway.test_h1_protocol import run_against


def test_bytes_after_a_complete_response_never_reach_the_caller() -> None:
    smuggled = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n"
        b'{"ok":true}'
        b'HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n{"smuggled":1}'
    )
    handler, served = run_against([smuggled, OK])

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert r.body == b'{"ok":true}'
        # The connection that carried stray bytes is not reused: the next request gets its
        # own answer on a fresh connection.
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert (r.status, r.body) == (200, b"{}")
        assert served["connections"] == 2
        server.close()

    asyncio.run(main())


def test_raw_bytes_after_a_response_never_reach_the_caller() -> None:
    trailing = b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"ok":true}{"smuggled":1}'
    handler, served = run_against([trailing, OK])

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert r.body == b'{"ok":true}'
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert r.body == b"{}"
        assert served["connections"] == 2
        server.close()

    asyncio.run(main())


def test_a_stray_partial_response_on_an_idle_connection_does_not_break_the_next_request() -> None:
    connections = {"n": 0}
    dropped = asyncio.Event()  # the pool closed the connection that got the stray bytes

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections["n"] += 1
        first = connections["n"] == 1
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                if first:
                    dropped.set()
                return
            writer.write(OK)
            await writer.drain()
            if first:
                # Unasked for, while the connection sits idle in the pool.
                await asyncio.sleep(0.05)
                writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{"par')
                await writer.drain()

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        assert (await pool.request(origin, b"POST", b"/", b"{}", b"", 5)).body == b"{}"
        await asyncio.wait_for(dropped.wait(), 5)
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert (r.status, r.body) == (200, b"{}")
        assert connections["n"] == 2
        server.close()

    asyncio.run(main())


def test_an_upstream_body_over_the_cap_is_refused_without_buffering_it() -> None:
    cap = 1 << 20

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        total = 300 << 20
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"x" * (1 << 20)
        try:
            for _ in range(total // len(piece)):
                writer.write(piece)
                await writer.drain()
        except ConnectionError:
            pass  # the client hung up: what we want
        writer.close()

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1, max_response_bytes=cap)
        with pytest.raises(UpstreamTooLarge):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 10)
        assert pool.idle_count() == 0
        server.close()

    asyncio.run(main())
