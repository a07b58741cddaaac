"""Limit: requests and tokens per minute per client (Redis windows shared by every replica).

Admitted requests count as demand for their pool (modelfleet_pool_requests_total). Before
the call the request and its token reservation (prompt estimate + completion budget, see
:mod:`services.gateway.ratelimit`) are counted; after it the reservation is settled with what
the completion really took (the backend's usage, or one token per streamed event).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson

from services.gateway.exchange import X_CACHE, Exchange, Next, Outcome, Reply, Streamed
from services.gateway.metrics import GatewayMetrics
from services.gateway.ratelimit import RateLimiter, estimate_tokens


def completion_budget(payload: dict[str, Any], default: int) -> int:
    """The most tokens a request may generate: max_tokens (or default) x choices x prompts."""
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    budget = limit if isinstance(limit, int) and not isinstance(limit, bool) else default
    n = payload.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    prompt = payload.get("prompt")
    prompts = (
        len(prompt) if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else 1
    )
    return max(0, budget) * choices * prompts


class Limit:
    def __init__(
        self, limiter: RateLimiter, metrics: GatewayMetrics, default_completion_tokens: int = 256
    ) -> None:
        self.limiter = limiter
        self.metrics = metrics
        self.default_completion_tokens = default_completion_tokens
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        counts = ex.route.counts_tokens
        budget = completion_budget(ex.payload, self.default_completion_tokens) if counts else 0
        reserve = estimate_tokens(ex.body) + budget if counts else None
        await self.limiter.check(ex.client_id, reserve)
        # Admitted demand per pool, before a replica is chosen: a pool at zero replicas counts
        # too, so KEDA can wake it on this counter.
        self.metrics.pool_demand(ex.route.pool)
        settle = counts and self.limiter.counts_tokens()
        try:
            outcome = await call_next(ex)
        except BaseException:
            if settle:  # nothing was generated for this request: give the budget back
                self._later(self.limiter.add_tokens(ex.client_id, -budget))
            raise
        if not settle:
            return outcome
        if isinstance(outcome, Streamed):
            outcome.chunks = self._count_events(ex.client_id, outcome.chunks, budget)
        elif outcome.status == 200 and outcome.headers.get(X_CACHE) != "hit":
            used = completion_tokens(outcome)
            self._later(self.limiter.add_tokens(ex.client_id, used - budget))
        else:
            # A cached answer or a refusal cost no completion.
            self._later(self.limiter.add_tokens(ex.client_id, -budget))
        return outcome

    async def _count_events(
        self, client_id: str, chunks: AsyncIterator[bytes], budget: int
    ) -> AsyncIterator[bytes]:
        events = 0
        try:
            async for chunk in chunks:
                # One SSE event carries about one token: a cheap, honest estimate.
                events += chunk.count(b"data:")
                yield chunk
        finally:
            self._later(self.limiter.add_tokens(client_id, events - budget))

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
