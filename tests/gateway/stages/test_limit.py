from __future__ import annotations

import uuid

import pytest

from modelfleet.api import CHAT, EMBEDDINGS
from modelfleet.errors import RateLimited
from services.gateway.exchange import Reply
from services.gateway.metrics import GatewayMetrics
from services.gateway.ratelimit import RateLimiter
from services.gateway.redisconn import RedisGuard
from services.gateway.stages.limit import Limit, completion_tokens
from tests.gateway.stages.support import Answer, exchange, run
from tests.support.procs import Proc


def test_completion_tokens_read_from_usage_or_zero() -> None:
    assert completion_tokens(Reply(200, b'{"usage": {"completion_tokens": 7}}')) == 7
    assert completion_tokens(Reply(200, b"not json")) == 0
    assert completion_tokens(Reply(200, b"[1]")) == 0


def test_requests_per_minute_refuse_past_the_window(redis_proc: Proc) -> None:
    async def main() -> None:
        guard = RedisGuard(f"redis://127.0.0.1:{redis_proc.port}/0", GatewayMetrics())
        await guard.start()
        try:
            stage = Limit(RateLimiter(guard, GatewayMetrics(), rpm=2, tpm=0), GatewayMetrics())
            ex = exchange(EMBEDDINGS)
            ex.client_id = f"test:{uuid.uuid4().hex}"
            nxt = Answer()
            await stage(ex, nxt)
            await stage(ex, nxt)
            with pytest.raises(RateLimited):
                await stage(ex, nxt)
            assert len(nxt.seen) == 2
        finally:
            await guard.close()

    run(main)


def test_without_redis_limits_are_open() -> None:
    async def main() -> None:
        guard = RedisGuard("", GatewayMetrics())
        stage = Limit(RateLimiter(guard, GatewayMetrics(), rpm=1, tpm=1), GatewayMetrics())
        for _ in range(3):
            await stage(exchange(CHAT, b"x" * 400), Answer())

    run(main)


def test_settling_after_the_minute_rolled_over_leaves_no_key_without_a_ttl(
    redis_proc: Proc,
) -> None:
    """A settle (or refund) whose window began after the request did creates the window's key:
    it must expire like every other (`make soak` found one that never would)."""
    import redis.asyncio as aioredis

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_proc.port}/0"
        guard = RedisGuard(url, GatewayMetrics())
        await guard.start()
        now = [1_000_000.0]
        limiter = RateLimiter(guard, GatewayMetrics(), rpm=0, tpm=1000, clock=lambda: now[0])
        client = f"test:{uuid.uuid4().hex}"
        try:
            await limiter.check(client, 100)
            now[0] += 61  # the request ends in the next window
            await limiter.add_tokens(client, -40)
            r = aioredis.from_url(url)
            keys = [k async for k in r.scan_iter(f"mf:rl:{client}:*")]
            assert len(keys) == 2
            assert all([await r.ttl(k) > 0 for k in keys])
            await r.aclose()
        finally:
            await guard.close()

    run(main)
