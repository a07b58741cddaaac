"""Per-key rate limits in Redis: requests per minute everywhere, tokens per minute on LLM routes.

Fixed one-minute windows (one INCR per limit, pipelined into a single round trip), shared by
every gateway replica. Tokens are reserved before the call and settled after it: the reservation
is the prompt, estimated from the body size (``len(body) // 4``: JSON-wrapped English text runs
about four bytes a token), plus the most the request may generate (its ``max_tokens`` times its
choices, or RATE_LIMIT_DEFAULT_COMPLETION_TOKENS when it names none); a request is refused when
the reservation does not fit in what is left of its window. After the call the unused part of
the completion reservation is given back (the backend's reported usage, one token per streamed
event, nothing for a cache hit or a failure). So one request can no longer overshoot the
limit by its whole completion.

If Redis is down, RATE_LIMIT_FAIL_MODE decides: ``open`` (default) serves the requests unlimited
(``modelfleet_redis_up`` is 0; a cache outage should not become an outage of the API, and the
in-flight cap still bounds the load), ``closed`` refuses them (503), ``local`` counts them in
this process's own windows (each gateway replica then allows the full limit).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis

from modelfleet.errors import RateLimited, ServiceUnavailable
from services.gateway.metrics import GatewayMetrics
from services.gateway.redisconn import RedisDown, RedisGuard

WINDOW_S = 60
BYTES_PER_TOKEN = 4


def estimate_tokens(body: bytes) -> int:
    return max(1, len(body) // BYTES_PER_TOKEN)


class RateLimiter:
    def __init__(
        self,
        redis: RedisGuard,
        metrics: GatewayMetrics,
        *,
        rpm: int,
        tpm: int,
        clock: Callable[[], float] = time.time,
        fail_mode: str = "open",
    ) -> None:
        self.fail_mode = fail_mode
        self._local: dict[str, int] = {}  # the fallback windows of fail_mode=local
        self._local_window = -1
        self.redis = redis
        self.clock = clock  # wall time: the windows are shared by every gateway replica
        self.metrics = metrics
        self.rpm = rpm
        self.tpm = tpm

    def counts_tokens(self) -> bool:
        return bool(self.tpm) and self.redis.configured

    async def check(self, client_id: str, prompt_tokens: int | None) -> None:
        """Count this request; raise RateLimited (429 + Retry-After) if a window is full.

        ``prompt_tokens`` is the whole reservation (prompt estimate + completion budget)."""
        use_tpm = bool(self.tpm) and prompt_tokens is not None
        if not (self.rpm or use_tpm) or not self.redis.configured:
            return
        now = self.clock()
        window = int(now // WINDOW_S)
        retry_after = WINDOW_S - (now % WINDOW_S)
        rpm_key = f"mf:rl:{client_id}:r:{window}"
        tpm_key = f"mf:rl:{client_id}:t:{window}"

        async def count(r: redis.Redis) -> list[int]:
            pipe = r.pipeline(transaction=False)
            if self.rpm:
                pipe.incr(rpm_key)
                pipe.expire(rpm_key, WINDOW_S * 2)
            if use_tpm:
                pipe.incrby(tpm_key, prompt_tokens or 0)
                pipe.expire(tpm_key, WINDOW_S * 2)
            return list(await pipe.execute())

        try:
            results = await self.redis.call(count)
        except RedisDown:
            if self.fail_mode == "open":
                return
            if self.fail_mode == "closed":
                raise ServiceUnavailable(
                    "rate limits are unavailable (Redis is down)", retry_after=5
                ) from None
            results = self._count_locally(window, rpm_key, tpm_key, use_tpm, prompt_tokens or 0)
        if self.rpm and results[0] > self.rpm:
            self.metrics.refused("requests")
            raise RateLimited(
                f"rate limit reached: {self.rpm} requests per minute",
                retry_after=retry_after,
                code="rate_limit_requests",
            )
        if use_tpm and results[-2] > self.tpm:
            reserve = prompt_tokens or 0
            # Not counted after all: a refused request must not eat the window.
            with contextlib.suppress(RedisDown):
                await self.redis.call(lambda r: r.decrby(tpm_key, reserve))
            self.metrics.refused("tokens")
            if reserve > self.tpm:
                message = (
                    f"this request may use {reserve} tokens (prompt + max_tokens), over the "
                    f"limit of {self.tpm} tokens per minute: lower max_tokens"
                )
            else:
                message = f"rate limit reached: {self.tpm} tokens per minute"
            raise RateLimited(message, retry_after=retry_after, code="rate_limit_tokens")

    def _count_locally(
        self, window: int, rpm_key: str, tpm_key: str, use_tpm: bool, tokens: int
    ) -> list[int]:
        """The pipeline's answers, from this process's windows (RATE_LIMIT_FAIL_MODE=local)."""
        if window != self._local_window:
            self._local.clear()  # one window at a time: memory bounded by the clients of a minute
            self._local_window = window
        results: list[int] = []
        if self.rpm:
            self._local[rpm_key] = self._local.get(rpm_key, 0) + 1
            results += [self._local[rpm_key], 1]
        if use_tpm:
            self._local[tpm_key] = self._local.get(tpm_key, 0) + tokens
            results += [self._local[tpm_key], 1]
        return results

    async def add_tokens(self, client_id: str, tokens: int) -> None:
        """Settle a finished request: add ``tokens`` (negative: give back) to its window."""
        if not self.counts_tokens() or tokens == 0:
            return
        key = f"mf:rl:{client_id}:t:{int(self.clock() // WINDOW_S)}"
        with contextlib.suppress(RedisDown):
            # INCRBY creates the key when the minute has rolled over since the request began:
            # it gets the window's TTL too, or it would live forever (the soak caught one).
            await self.redis.call(lambda r: _incr_with_ttl(r, key, tokens))


async def _incr_with_ttl(r: Any, key: str, amount: int) -> Any:
    pipe = r.pipeline(transaction=False)
    pipe.incrby(key, amount)
    pipe.expire(key, WINDOW_S * 2)
    return await pipe.execute()
