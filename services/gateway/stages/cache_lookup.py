"""Cache lookup: a fresh cached answer, single-flight for identical misses, a stale answer when
the pool is down. Only for requests the route calls cacheable (see :class:`RouteSpec`)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable

from modelfleet.api import CacheMode
from modelfleet.errors import DeadlineExceeded, ServiceUnavailable
from services.gateway.cache import (
    CacheControl,
    Entry,
    ResponseCache,
    SingleFlight,
    cache_key,
    with_fresh_id,
)
from services.gateway.exchange import DEGRADED, X_CACHE, Exchange, Next, Outcome, Reply
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.redisconn import RedisDown


class CacheLookup:
    def __init__(
        self,
        cache: ResponseCache,
        pools: dict[str, Pool],
        metrics: GatewayMetrics,
        shared_routes: frozenset[str] = frozenset(),
    ) -> None:
        self.shared_routes = shared_routes  # cached across tenants (CACHE_SHARED_ROUTES)
        self.cache = cache
        self.pools = pools
        self.metrics = metrics
        self.flights: SingleFlight[Outcome] = SingleFlight()

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        if not ex.route.cacheable(ex.payload, ex.stream):
            return await call_next(ex)
        if not self.cache.enabled:
            outcome = await call_next(ex)
            if isinstance(outcome, Reply):
                outcome.headers[X_CACHE] = "bypass"
            return outcome
        return await self._cached(ex, call_next)

    async def _cached(self, ex: Exchange, call_next: Next) -> Outcome:
        route = ex.route
        cc = CacheControl.parse(ex.header(b"cache-control"))
        # Tenants are API keys; an open gateway has none (its clients are told apart by address
        # only for rate limits), so there every client shares one cache.
        keyed = ex.client_id.startswith("key:")
        tenant = ex.client_id if keyed and route.path not in self.shared_routes else ""
        key = cache_key(route.path, self.pools[route.pool].identity, ex.payload, tenant)
        fresh_ids = route.cache is CacheMode.GREEDY  # completions carry an id
        stale: Entry | None = None
        looked_up = False
        if cc.no_cache:
            outcome = "bypass"
        else:
            try:
                entry = await self.cache.get(key)
                looked_up = True
            except RedisDown:
                entry, outcome = None, "error"
            else:
                if entry is not None and entry.fresh:
                    self.metrics.cache_result(route.path, "hit")
                    return from_cache(entry, fresh_ids)
                stale, outcome = entry, "miss"
        self.metrics.cache_result(route.path, outcome)

        def storable(reply: Outcome) -> bool:
            return (
                isinstance(reply, Reply)
                and not cc.no_store
                and reply.status == 200
                and DEGRADED not in reply.headers
            )

        async def store(reply: Outcome) -> None:
            if storable(reply):
                assert isinstance(reply, Reply)
                await self.cache.put(key, reply.body)

        def fetch() -> Awaitable[Outcome]:
            return call_next(ex)

        try:
            if cc.no_cache:
                # A request for a fresh answer gets a backend call of its own, as a bypassed
                # request does in nginx's cache lock: it neither joins nor leads a flight.
                reply = await fetch()
                if storable(reply):
                    assert isinstance(reply, Reply)
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
            self.metrics.fallback(route.pool, "cache")
            out = from_cache(stale, fresh_ids)
            out.headers[DEGRADED] = f"{route.pool}-unavailable; served-by=cache"
            return out
        assert isinstance(reply, Reply)  # cacheable requests do not stream
        headers = {**reply.headers, X_CACHE: "miss" if outcome == "miss" else "bypass"}
        return Reply(reply.status, reply.body, headers, reply.replica)


def from_cache(entry: Entry, fresh_id: bool = False) -> Reply:
    return Reply(
        200,
        with_fresh_id(entry.body) if fresh_id else entry.body,
        {"content-type": "application/json", X_CACHE: "hit", "age": str(int(entry.age_s))},
    )
