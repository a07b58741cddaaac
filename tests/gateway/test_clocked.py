"""Cache TTLs and rate-limit windows on an injected clock, against a real Redis: time moves
when the test says so, never by sleeping."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from modelfleet.errors import RateLimited
from services.gateway.cache import ResponseCache
from services.gateway.metrics import GatewayMetrics
from services.gateway.ratelimit import RateLimiter
from services.gateway.redisconn import RedisGuard
from tests.support.procs import Proc


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_with_redis(redis_proc: Proc, body):  # type: ignore[no-untyped-def]
    async def main() -> None:
        guard = RedisGuard(f"redis://127.0.0.1:{redis_proc.port}/0", GatewayMetrics())
        await guard.start()
        try:
            await body(guard)
        finally:
            await guard.close()

    asyncio.run(main())


def test_a_cache_entry_is_fresh_for_ttl_then_only_stale(redis_proc: Proc) -> None:
    clock = Clock(1_000_000.0)
    key = f"mf:test:{uuid.uuid4().hex}"

    async def body(guard: RedisGuard) -> None:
        cache = ResponseCache(
            guard, enabled=True, ttl_s=60, stale_ttl_s=600, max_value_bytes=1024, clock=clock
        )
        await cache.put(key, b'{"ok":1}')
        clock.now += 59.5
        entry = await cache.get(key)
        assert entry is not None and entry.fresh and entry.body == b'{"ok":1}'
        clock.now += 1.0
        stale = await cache.get(key)
        assert stale is not None and not stale.fresh and stale.age_s == pytest.approx(60.5)

    run_with_redis(redis_proc, body)


def test_a_request_window_refuses_then_rolls_over(redis_proc: Proc) -> None:
    clock = Clock(60.0 * 10_000_000 + 5)  # 5 s into a window nobody else uses
    client = f"test:{uuid.uuid4().hex}"

    async def body(guard: RedisGuard) -> None:
        limiter = RateLimiter(guard, GatewayMetrics(), rpm=2, tpm=0, clock=clock)
        await limiter.check(client, None)
        await limiter.check(client, None)
        with pytest.raises(RateLimited) as refused:
            await limiter.check(client, None)
        assert refused.value.retry_after == pytest.approx(55.0)
        clock.now += 55.0  # the next window
        await limiter.check(client, None)

    run_with_redis(redis_proc, body)


def test_tokens_are_counted_in_the_window_of_the_clock(redis_proc: Proc) -> None:
    clock = Clock(60.0 * 10_000_001 + 1)
    client = f"test:{uuid.uuid4().hex}"

    async def body(guard: RedisGuard) -> None:
        limiter = RateLimiter(guard, GatewayMetrics(), rpm=0, tpm=100, clock=clock)
        await limiter.check(client, 10)
        await limiter.add_tokens(client, 95)  # 105 used: the next request is refused
        with pytest.raises(RateLimited):
            await limiter.check(client, 1)
        clock.now += 60.0
        await limiter.check(client, 1)

    run_with_redis(redis_proc, body)
