"""aiohttp and httpx behind the H1Pool interface, to measure services/gateway/h1.py against them.

``python -m tests.perf.upstream_clients aiohttp|httpx|h1`` runs the real gateway (settings from
the environment, as ``python -m services.gateway`` does) with its forwarding client swapped; the
control plane, pipeline and everything else are unchanged. Benchmark use only.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from services.gateway import h1
from services.gateway.h1 import (
    H1Response,
    Headers,
    Origin,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
)


def _headers(extra: bytes) -> dict[str, str]:
    out = {"content-type": "application/json"}
    for line in extra.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b":")
            out[k.decode().strip()] = v.decode().strip()
    return out


def _url(origin: Origin, path: bytes) -> str:
    return f"{origin.scheme}://{origin.host_header.decode()}{path.decode()}"


class _Stream:
    def __init__(self, status: int, headers: Headers, chunks: AsyncIterator[bytes], close: Any):
        self.status = status
        self.headers = headers
        self._chunks = chunks
        self._close = close

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for c in self._chunks:
                yield c
        finally:
            self.aclose()

    def aclose(self) -> None:
        self._close()


class AiohttpPool:
    def __init__(self, *, connect_timeout_s: float, keepalive_expiry_s: float = 20.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_expiry_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self.keepalive_expiry_s)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def _send(self, origin, method, path, body, extra, timeout):  # type: ignore[no-untyped-def]
        t = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s)
        try:
            async with asyncio.timeout(timeout):
                return await self.session().request(
                    method.decode(), _url(origin, path), data=body, headers=_headers(extra),
                    timeout=t, allow_redirects=False,
                )  # fmt: skip
        except TimeoutError:
            raise UpstreamTimeout("timeout") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(str(exc)) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamDisconnected(str(exc)) from exc

    @staticmethod
    def _head(resp: aiohttp.ClientResponse) -> Headers:
        return [(k.lower(), v) for k, v in resp.raw_headers]

    async def request(self, origin, method, path, body, extra, timeout) -> H1Response:  # type: ignore[no-untyped-def]
        resp = await self._send(origin, method, path, body, extra, timeout)
        try:
            async with asyncio.timeout(timeout):
                data = await resp.read()
        except TimeoutError:
            resp.close()
            raise UpstreamTimeout("timeout") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamDisconnected(str(exc)) from exc
        return H1Response(resp.status, self._head(resp), data)

    async def stream(self, origin, method, path, body, extra, timeout, chunk_timeout):  # type: ignore[no-untyped-def]
        resp = await self._send(origin, method, path, body, extra, timeout)
        return _Stream(resp.status, self._head(resp), resp.content.iter_any(), resp.release)

    def close(self) -> None:
        if self._session is not None:
            asyncio.get_event_loop().create_task(self._session.close())


class HttpxPool:
    def __init__(self, *, connect_timeout_s: float, keepalive_expiry_s: float = 20.0) -> None:
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256,
                                keepalive_expiry=keepalive_expiry_s),
            timeout=httpx.Timeout(None, connect=connect_timeout_s),
            trust_env=False,
        )  # fmt: skip

    async def _send(self, origin, method, path, body, extra, timeout):  # type: ignore[no-untyped-def]
        req = self.client.build_request(method.decode(), _url(origin, path), content=body,
                                        headers=_headers(extra))  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                return await self.client.send(req, stream=True)
        except TimeoutError:
            raise UpstreamTimeout("timeout") from None
        except httpx.ConnectError as exc:
            raise UpstreamConnectError(str(exc)) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise UpstreamDisconnected(str(exc)) from exc

    @staticmethod
    def _head(resp: httpx.Response) -> Headers:
        return [(k.lower(), v) for k, v in resp.headers.raw]

    async def request(self, origin, method, path, body, extra, timeout) -> H1Response:  # type: ignore[no-untyped-def]
        resp = await self._send(origin, method, path, body, extra, timeout)
        try:
            async with asyncio.timeout(timeout):
                data = await resp.aread()
        except TimeoutError:
            raise UpstreamTimeout("timeout") from None
        finally:
            await resp.aclose()
        return H1Response(resp.status_code, self._head(resp), data)

    async def stream(self, origin, method, path, body, extra, timeout, chunk_timeout):  # type: ignore[no-untyped-def]
        resp = await self._send(origin, method, path, body, extra, timeout)

        def close() -> None:
            asyncio.get_event_loop().create_task(resp.aclose())

        return _Stream(resp.status_code, self._head(resp), resp.aiter_raw(), close)

    def close(self) -> None:
        asyncio.get_event_loop().create_task(self.client.aclose())


CLIENTS = {"h1": h1.H1Pool, "aiohttp": AiohttpPool, "httpx": HttpxPool}


def main() -> None:
    import services.gateway.runtime as runtime
    from services.gateway.main import main as gateway_main

    runtime.H1Pool = CLIENTS[sys.argv[1]]  # type: ignore[misc,assignment]
    gateway_main()


if __name__ == "__main__":
    main()
