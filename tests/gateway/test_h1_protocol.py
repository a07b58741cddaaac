"""What hand-written HTTP clients get wrong, checked against h1.py with real sockets: framing
(duplicate Content-Length, Transfer-Encoding), oversized heads, reuse after an error, and
CR/LF in the one forwarded value that comes from the client (X-Request-ID)."""

from __future__ import annotations

import asyncio

import pytest

from modelfleet.middleware import _incoming_request_id
from services.gateway.h1 import MAX_HEAD_BYTES, H1Pool, UpstreamDisconnected
from tests.gateway.test_h1 import OK, read_request, serve


def run_against(answers: list[bytes]):  # type: ignore[no-untyped-def]
    """A server that answers its n-th request on any connection with ``answers[n]``."""
    served = {"n": 0, "connections": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served["connections"] += 1
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(answers[min(served["n"], len(answers) - 1)])
            served["n"] += 1
            await writer.drain()

    return handler, served


def test_duplicate_content_length_is_refused_and_the_connection_not_reused() -> None:
    bad = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 9\r\n\r\n{}"
    handler, served = run_against([bad, OK])

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        with pytest.raises(UpstreamDisconnected):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        # Reuse after an error: a fresh connection, a clean answer.
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert (r.status, r.body) == (200, b"{}")
        assert served["connections"] == 2
        server.close()

    asyncio.run(main())


def test_chunked_bodies_are_reassembled_and_te_with_content_length_is_refused() -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    )
    smuggle = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    handler, _ = run_against([chunked, smuggle, OK])

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        r = await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert r.body == b'{"a":1}'
        with pytest.raises(UpstreamDisconnected):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert (await pool.request(origin, b"POST", b"/", b"{}", b"", 5)).status == 200
        server.close()

    asyncio.run(main())


def test_an_oversized_upstream_head_is_refused_without_buffering_it() -> None:
    huge = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (4 * MAX_HEAD_BYTES) + b"\r\n"
    handler, _ = run_against([huge])

    async def main() -> None:
        server, origin = await serve(handler)
        pool = H1Pool(connect_timeout_s=1)
        with pytest.raises(UpstreamDisconnected, match="head over"):
            await pool.request(origin, b"POST", b"/", b"{}", b"", 5)
        assert pool.idle_count() == 0
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize("value", [b"abc\r\nX-Injected: 1", b"abc\nX-Injected: 1", b"a\rb"])
def test_a_request_id_with_cr_or_lf_is_replaced_not_forwarded(value: bytes) -> None:
    rid = _incoming_request_id({"headers": [(b"x-request-id", value)]})
    assert "\r" not in rid and "\n" not in rid and "Injected" not in rid
    assert _incoming_request_id({"headers": [(b"x-request-id", b"client-id-1")]}) == "client-id-1"
