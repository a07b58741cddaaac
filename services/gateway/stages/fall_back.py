"""Fall back: when a route's own pool cannot serve, another pool's route may (chat <-> completions),
with the request and the answer (or each stream event) converted; else 503 with Retry-After."""

from __future__ import annotations

import logging
import math

import orjson

from modelfleet.errors import ServiceUnavailable
from services.gateway.exchange import (
    DEGRADED,
    STREAM_HEADERS,
    Exchange,
    Next,
    Outcome,
    Reply,
    Streamed,
)
from services.gateway.fallback import FALLBACKS, convert_sse
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.sse_guard import guard_sse
from services.gateway.upstream import PoolUnavailable, StreamReply, Upstream

log = logging.getLogger("modelfleet.gateway.fallback")


class FallBack:
    def __init__(
        self,
        pools: dict[str, Pool],
        upstream: Upstream,
        metrics: GatewayMetrics,
        *,
        retry_after_s: float,
    ) -> None:
        self.pools = pools
        self.upstream = upstream
        self.metrics = metrics
        self.retry_after_s = retry_after_s

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        try:
            return await call_next(ex)
        except PoolUnavailable as exc:
            primary = exc
        route = ex.route
        fb = FALLBACKS.get(route.path)
        if fb is not None and (lost := fb.loses(ex.payload)) is not None:
            log.info("no fallback for %s: %s cannot be served by %s", route.path, lost, fb.pool)
        elif fb is not None and self.pools[fb.pool].available():
            converted = orjson.dumps(fb.request(ex.payload))
            try:
                res = await self.upstream.send(
                    self.pools[fb.pool], "POST", fb.path, converted, ex.request_id,
                    stream=ex.stream,
                )  # fmt: skip
            except PoolUnavailable as exc:
                log.warning("fallback %s -> %s failed too: %s", route.pool, fb.pool, exc)
            else:
                self.metrics.fallback(route.pool, fb.pool)
                reason = f"{route.pool}-unavailable; served-by={fb.pool}"
                if isinstance(res, StreamReply):
                    chunks = res.chunks()
                    if res.status == 200:
                        chunks = guard_sse(convert_sse(chunks, fb.chunk()), fb.pool)
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
            f"no {route.pool} replica is available ({primary.reason})", retry_after=retry_after
        )


def _seconds(value: str | None) -> float | None:
    try:
        s = float(value) if value is not None else None
    except ValueError:
        return None
    return s if s is not None and math.isfinite(s) and s > 0 else None
