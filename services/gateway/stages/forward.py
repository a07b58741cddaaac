"""Forward: choose a replica of the route's pool and send the request, retrying on another
replica (see :mod:`services.gateway.upstream`); the last stage of the pipeline."""

from __future__ import annotations

from services.gateway.exchange import STREAM_HEADERS, Exchange, Next, Outcome, Streamed
from services.gateway.pools import Pool, pool_for_model
from services.gateway.sse_guard import guard_sse
from services.gateway.upstream import StreamReply, Upstream


class Forward:
    def __init__(self, pools: dict[str, Pool], upstream: Upstream) -> None:
        self.pools = pools
        self.upstream = upstream

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        route = ex.route
        pool = self.pools[route.pool]
        if route.by_model:
            pool = pool_for_model(self.pools, route.pool, ex.payload.get("model"))
        # No route takes query parameters; replicas cache their request targets per path.
        res = await self.upstream.send(
            pool, route.method, route.path, ex.body, ex.request_id, stream=ex.stream
        )
        if isinstance(res, StreamReply):
            chunks = res.chunks()
            if res.status == 200:
                # SSE: a replica dying mid-way ends the stream with an error event + [DONE].
                chunks = guard_sse(chunks, route.pool)
            return Streamed(res.status, {**res.headers, **STREAM_HEADERS}, chunks, res.aclose)
        return res
