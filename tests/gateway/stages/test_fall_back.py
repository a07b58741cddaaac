from __future__ import annotations

import pytest

from modelfleet.api import CHAT, POOLS
from modelfleet.errors import ServiceUnavailable
from services.gateway.h1 import H1Pool
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.routing import RoundRobin
from services.gateway.stages.fall_back import FallBack
from services.gateway.upstream import PoolUnavailable, Upstream
from tests.gateway.stages.support import Answer, exchange, run


def stage(retry_after_s: float = 2.0) -> FallBack:
    metrics = GatewayMetrics()
    pools = {
        p: Pool(p, RoundRobin(), failure_threshold=3, open_s=5, metrics=metrics) for p in POOLS
    }
    upstream = Upstream(H1Pool(connect_timeout_s=1), retries=0, request_timeout_s=5)
    return FallBack(pools, upstream, metrics, retry_after_s=retry_after_s)


def test_an_answer_passes_through() -> None:
    nxt = Answer()
    assert run(lambda: stage()(exchange(CHAT), nxt)) is nxt.outcome


def test_no_fallback_pool_is_a_503_with_the_backends_retry_after() -> None:
    down = Answer(error=PoolUnavailable("llm", "no healthy replica", retry_after="7"))
    with pytest.raises(ServiceUnavailable) as err:
        run(lambda: stage()(exchange(CHAT), down))
    assert err.value.retry_after == 7.0 and "no llm replica" in err.value.message
    down = Answer(error=PoolUnavailable("llm", "no healthy replica", retry_after="soon"))
    with pytest.raises(ServiceUnavailable) as err:
        run(lambda: stage(3.0)(exchange(CHAT), down))
    assert err.value.retry_after == 3.0
