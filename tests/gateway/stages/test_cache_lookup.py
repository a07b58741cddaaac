from __future__ import annotations

import uuid

import pytest

from modelfleet.api import CHAT, EMBEDDINGS, POOLS
from modelfleet.errors import ServiceUnavailable
from services.gateway.cache import ResponseCache
from services.gateway.exchange import DEGRADED, X_CACHE, Reply
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.redisconn import RedisGuard
from services.gateway.routing import RoundRobin
from services.gateway.stages.cache_lookup import CacheLookup
from tests.gateway.stages.support import Answer, exchange, run
from tests.support.procs import Proc


def lookup(guard: RedisGuard, ttl_s: int = 60) -> CacheLookup:
    metrics = GatewayMetrics()
    pools = {
        p: Pool(p, RoundRobin(), failure_threshold=3, open_s=5, metrics=metrics) for p in POOLS
    }
    cache = ResponseCache(guard, enabled=True, ttl_s=ttl_s, stale_ttl_s=600, max_value_bytes=4096)
    return CacheLookup(cache, pools, metrics)


def payload_exchange(route, payload):  # type: ignore[no-untyped-def]
    ex = exchange(route)
    ex.payload = payload
    return ex


def test_miss_then_hit_and_a_stale_answer_when_the_pool_is_down(redis_proc: Proc) -> None:
    async def main() -> None:
        guard = RedisGuard(f"redis://127.0.0.1:{redis_proc.port}/0", GatewayMetrics())
        await guard.start()
        try:
            stage = lookup(guard, ttl_s=0)  # every entry is stale at once
            payload = {"input": uuid.uuid4().hex}
            first = await stage(payload_exchange(EMBEDDINGS, payload), Answer())
            assert isinstance(first, Reply) and first.headers[X_CACHE] == "miss"
            down = Answer(error=ServiceUnavailable("down"))
            stale = await stage(payload_exchange(EMBEDDINGS, payload), down)
            assert isinstance(stale, Reply) and stale.headers[X_CACHE] == "hit"
            assert stale.headers[DEGRADED] == "embedding-unavailable; served-by=cache"
            with pytest.raises(ServiceUnavailable):
                await stage(payload_exchange(EMBEDDINGS, {"input": "never seen"}), down)

            fresh = lookup(guard)
            payload = {"input": uuid.uuid4().hex}
            nxt = Answer()
            await fresh(payload_exchange(EMBEDDINGS, payload), nxt)
            hit = await fresh(payload_exchange(EMBEDDINGS, payload), nxt)
            assert isinstance(hit, Reply) and hit.headers[X_CACHE] == "hit"
            assert len(nxt.seen) == 1
        finally:
            await guard.close()

    run(main)


def test_requests_that_are_not_cacheable_pass_through_untouched() -> None:
    async def main() -> None:
        stage = lookup(RedisGuard("", GatewayMetrics()))
        nxt = Answer()
        out = await stage(payload_exchange(CHAT, {"temperature": 0.7}), nxt)
        assert isinstance(out, Reply) and X_CACHE not in out.headers
        out = await stage(payload_exchange(EMBEDDINGS, {"input": "a"}), nxt)
        assert isinstance(out, Reply) and out.headers[X_CACHE] == "bypass"  # no Redis configured

    run(main)
