from __future__ import annotations

import collections

import httpx

from services.gateway.circuit import CircuitBreaker
from services.gateway.pools import Replica
from services.gateway.routing import LeastInFlight, RoundRobin, RoutingStrategy, build_router
from tests.gateway.conftest import backend_posts, gateway
from tests.support.procs import Proc

NO_CACHE = {"Cache-Control": "no-cache, no-store"}


def replicas(n: int) -> list[Replica]:
    return [Replica(f"http://10.0.0.{i}:3003", CircuitBreaker(3, 5.0), True) for i in range(n)]


def test_round_robin_takes_turns() -> None:
    rs = replicas(3)
    rr = RoundRobin()
    picks = [rr.pick(rs).url for _ in range(6)]
    assert collections.Counter(picks) == {r.url: 2 for r in rs}
    assert picks[:3] != [picks[0]] * 3


def test_least_in_flight_prefers_the_idle_replica() -> None:
    rs = replicas(3)
    rs[0].in_flight, rs[1].in_flight, rs[2].in_flight = 4, 1, 1
    lif = LeastInFlight()
    assert {lif.pick(rs).url for _ in range(4)} == {rs[1].url, rs[2].url}


def test_factory_builds_each_strategy() -> None:
    assert isinstance(build_router(RoutingStrategy.ROUND_ROBIN), RoundRobin)
    assert isinstance(build_router(RoutingStrategy("least_in_flight")), LeastInFlight)


def test_requests_alternate_between_two_embedding_replicas(
    embedding_pair: tuple[Proc, Proc],
) -> None:
    a, b = embedding_pair
    with gateway({"embedding": [a.url, b.url]}) as gw:
        before = (backend_posts(a, "/v1/embeddings"), backend_posts(b, "/v1/embeddings"))
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            for i in range(10):
                r = c.post("/v1/embeddings", json={"input": f"turn {i}"}, headers=NO_CACHE)
                assert r.status_code == 200, r.text
        after = (backend_posts(a, "/v1/embeddings"), backend_posts(b, "/v1/embeddings"))
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)
