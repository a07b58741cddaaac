"""One API request through the gateway: parse once, limit, cache, forward, fall back.

Bodies are forwarded as the client sent them. The gateway parses the JSON once, only to read
what it acts on (``stream``, ``temperature``, the canonical cache key) and to answer malformed
JSON with a 400 itself; everything else is the backend's to validate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelfleet.asgi import read_body
from modelfleet.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ServiceUnavailable,
    exception_response,
)
from services.gateway.cache import CacheControl, Entry, ResponseCache, SingleFlight, cache_key
from services.gateway.endpoints import Endpoint
from services.gateway.fallback import convert_sse
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.ratelimit import RateLimiter, estimate_tokens
from services.gateway.redisconn import RedisDown
from services.gateway.upstream import PoolUnavailable, Reply, StreamReply, Upstream

log = logging.getLogger("modelfleet.gateway.proxy")

DEGRADED = "x-fleet-degraded"
X_CACHE = "x-cache"
JSON = "application/json"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class Streamed:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def parse_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    t = payload.get("temperature")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)):
        raise InvalidRequest("temperature must be a number", param="temperature")
    return payload


def _usage_tokens(body: bytes) -> int:
    try:
        usage = orjson.loads(body).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


class Gateway:
    def __init__(
        self,
        pools: dict[str, Pool],
        upstream: Upstream,
        cache: ResponseCache,
        limiter: RateLimiter,
        metrics: GatewayMetrics,
        *,
        max_body_bytes: int,
        retry_after_s: float,
    ) -> None:
        self.pools = pools
        self.upstream = upstream
        self.cache = cache
        self.limiter = limiter
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.flights: SingleFlight[Reply] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one API request (raw ASGI: this is the hot path)."""
        try:
            response = await self.handle(ep, scope, receive)
        except ClientDisconnect:
            return
        except Exception as exc:
            response = exception_response(exc)
        if isinstance(response, Reply):
            await send_reply(send, response)
        else:
            await response(scope, receive, send)

    async def handle(self, ep: Endpoint, scope: Scope, receive: Receive) -> Reply | Response:
        state = scope.get("state") or {}
        request_id: str = state.get("request_id") or uuid.uuid4().hex
        client_id: str = state.get("client_id") or "anonymous"
        body = await read_body(receive, self.max_body_bytes)
        payload = parse_payload(body)
        stream = payload.get("stream") is True
        await self.limiter.check(client_id, estimate_tokens(body) if ep.counts_tokens else None)
        self.metrics.pool_demand(ep.pool)

        cacheable = ep.cacheable(payload, stream)
        if cacheable and self.cache.enabled:
            cc = CacheControl.parse(header(scope, b"cache-control"))
            reply = await self._cached(ep, body, payload, request_id, cc)
        else:
            result = await self._dispatch(ep, body, payload, request_id, stream)
            if isinstance(result, Streamed):
                return self._stream_response(ep, result, client_id)
            reply = result
            if cacheable:  # cacheable, but no cache is configured
                reply = Reply(reply.status, reply.body, {**reply.headers, X_CACHE: "bypass"})
        if (
            ep.counts_tokens
            and self.limiter.counts_tokens()
            and reply.status == 200
            and reply.headers.get(X_CACHE) != "hit"  # a cached answer cost no completion
        ):
            self._later(self.limiter.add_tokens(client_id, _usage_tokens(reply.body)))
        return reply

    # -- forwarding and pool fallback ----------------------------------------------------
    async def _dispatch(
        self, ep: Endpoint, body: bytes, payload: dict[str, Any], request_id: str, stream: bool
    ) -> Reply | Streamed:
        try:
            return self._wrap(await self.upstream.post(
                self.pools[ep.pool], ep.path, body, request_id, stream=stream
            ))  # fmt: skip
        except PoolUnavailable as exc:
            primary = exc
        fb = ep.fallback
        if fb is not None and self.pools[fb.pool].available():
            converted = orjson.dumps(fb.request(payload))
            try:
                res = await self.upstream.post(
                    self.pools[fb.pool], fb.path, converted, request_id, stream=stream
                )
            except PoolUnavailable as exc:
                log.warning("fallback %s -> %s failed too: %s", ep.pool, fb.pool, exc)
            else:
                self.metrics.fallback(ep.pool, fb.pool)
                reason = f"{ep.pool}-unavailable; served-by={fb.pool}"
                if isinstance(res, StreamReply):
                    chunks = res.chunks()
                    if res.status == 200:
                        chunks = convert_sse(chunks, fb.chunk())
                    headers = {**res.headers, **STREAM_HEADERS, DEGRADED: reason}
                    return Streamed(res.status, headers, chunks, res.aclose)
                out = res.body
                if res.status == 200:
                    try:
                        out = orjson.dumps(fb.reply(orjson.loads(res.body)))
                    except (orjson.JSONDecodeError, AttributeError) as exc:
                        log.warning("fallback answer not convertible: %r", exc)
                return Reply(res.status, out, {**res.headers, DEGRADED: reason}, res.replica)
        retry_after = _seconds(primary.retry_after) or self.retry_after_s
        raise ServiceUnavailable(
            f"no {ep.pool} replica is available ({primary.reason})", retry_after=retry_after
        )

    @staticmethod
    def _wrap(res: Reply | StreamReply) -> Reply | Streamed:
        if isinstance(res, StreamReply):
            return Streamed(res.status, {**res.headers, **STREAM_HEADERS}, res.chunks(), res.aclose)
        return res

    async def _dispatch_unary(
        self, ep: Endpoint, body: bytes, payload: dict[str, Any], request_id: str
    ) -> Reply:
        result = await self._dispatch(ep, body, payload, request_id, stream=False)
        assert isinstance(result, Reply)
        return result

    # -- the inference cache -------------------------------------------------------------
    async def _cached(
        self,
        ep: Endpoint,
        body: bytes,
        payload: dict[str, Any],
        request_id: str,
        cc: CacheControl,
    ) -> Reply:
        key = cache_key(ep.path, self.pools[ep.pool].identity, payload)
        stale: Entry | None = None
        looked_up = False
        if cc.no_cache:
            outcome = "bypass"
        else:
            try:
                entry = await self.cache.get(key)
                looked_up = True
            except RedisDown:
                entry = None
                outcome = "error"
            else:
                if entry is not None and entry.fresh:
                    self.metrics.cache_result(ep.path, "hit")
                    return _from_cache(entry, "hit")
                stale = entry
                outcome = "miss"
        self.metrics.cache_result(ep.path, outcome)

        def storable(reply: Reply) -> bool:
            return not cc.no_store and reply.status == 200 and DEGRADED not in reply.headers

        async def store(reply: Reply) -> None:
            if storable(reply):
                await self.cache.put(key, reply.body)

        def fetch() -> Awaitable[Reply]:
            return self._dispatch_unary(ep, body, payload, request_id)

        try:
            if cc.no_cache:
                # A request for a fresh answer gets a backend call of its own, as a bypassed
                # request does in nginx's cache lock: it neither joins nor leads a flight.
                reply = await fetch()
                if storable(reply):
                    self.cache.put_later(key, reply.body)
            else:
                reply, _shared = await self.flights.do(key, fetch, store)
        except (ServiceUnavailable, DeadlineExceeded):
            if stale is None and not looked_up:
                # no-cache skipped the lookup; a stale answer still beats a 503.
                with contextlib.suppress(RedisDown):
                    stale = await self.cache.get(key)
            if stale is None:
                raise
            self.metrics.fallback(ep.pool, "cache")
            out = _from_cache(stale, "hit")
            out.headers[DEGRADED] = f"{ep.pool}-unavailable; served-by=cache"
            return out
        return Reply(
            reply.status,
            reply.body,
            {**reply.headers, X_CACHE: "miss" if outcome == "miss" else "bypass"},
            reply.replica,
        )

    # -- responses -----------------------------------------------------------------------
    def _stream_response(self, ep: Endpoint, streamed: Streamed, client_id: str) -> Response:
        count = ep.counts_tokens and self.limiter.counts_tokens()

        async def body() -> AsyncIterator[bytes]:
            events = 0
            try:
                async for chunk in streamed.chunks:
                    if count:
                        # One SSE event carries about one token: a cheap, honest estimate.
                        events += chunk.count(b"data:")
                    yield chunk
            finally:
                await streamed.close()
                if events:
                    self._later(self.limiter.add_tokens(client_id, events))

        return StreamingResponse(body(), streamed.status, streamed.headers)

    def _later(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-length", b"%d" % len(reply.body))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _from_cache(entry: Entry, result: str) -> Reply:
    return Reply(
        200,
        entry.body,
        {"content-type": JSON, X_CACHE: result, "age": str(int(entry.age_s))},
    )


def _seconds(value: str | None) -> float | None:
    try:
        s = float(value) if value is not None else None
    except ValueError:
        return None
    return s if s is not None and math.isfinite(s) and s > 0 else None
