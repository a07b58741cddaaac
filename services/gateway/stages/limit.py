"""Limit: requests and tokens per minute per client (Redis windows shared by every replica).

Admitted requests count as demand for their pool (modelfleet_pool_requests_total). Before
the call the request and its prompt estimate are counted; after it, the completion
tokens the backend reports (or, for a stream, one per event) are added to the window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import orjson

from services.gateway.exchange import X_CACHE, Exchange, Next, Outcome, Reply, Streamed
from services.gateway.metrics import GatewayMetrics
from services.gateway.ratelimit import RateLimiter, estimate_tokens


class Limit:
    def __init__(self, limiter: RateLimiter, metrics: GatewayMetrics) -> None:
        self.limiter = limiter
        self.metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        counts = ex.route.counts_tokens
        await self.limiter.check(ex.client_id, estimate_tokens(ex.body) if counts else None)
        # Admitted demand per pool, before a replica is chosen: a pool at zero replicas counts
        # too, so KEDA can wake it on this counter.
        self.metrics.pool_demand(ex.route.pool)
        outcome = await call_next(ex)
        if not (counts and self.limiter.counts_tokens()):
            return outcome
        if isinstance(outcome, Streamed):
            outcome.chunks = self._count_events(ex.client_id, outcome.chunks)
        elif outcome.status == 200 and outcome.headers.get(X_CACHE) != "hit":
            # A cached answer cost no completion.
            self._later(self.limiter.add_tokens(ex.client_id, completion_tokens(outcome)))
        return outcome

    async def _count_events(
        self, client_id: str, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        events = 0
        try:
            async for chunk in chunks:
                # One SSE event carries about one token: a cheap, honest estimate.
                events += chunk.count(b"data:")
                yield chunk
        finally:
            if events:
                self._later(self.limiter.add_tokens(client_id, events))

    def _later(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def completion_tokens(reply: Reply) -> int:
    try:
        usage = orjson.loads(reply.body).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0
