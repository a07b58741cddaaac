"""Active health checks against real sockets: ready, refusing, answering 503, hanging."""

from __future__ import annotations

import asyncio

import httpx

from services.gateway.circuit import CircuitState
from services.gateway.health import HealthChecker
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.routing import RoundRobin
from tests.gateway.fakes import fake
from tests.support.procs import Proc, await_until, free_port


def _pool(urls: list[str]) -> Pool:
    pool = Pool("embedding", RoundRobin(), failure_threshold=1, open_s=0.01,
                metrics=GatewayMetrics())  # fmt: skip
    pool.set_urls(urls, assume_healthy=True)
    return pool


def test_ready_replica_gives_the_pool_its_model_identity(fake_openai: Proc) -> None:
    async def main() -> None:
        pool = _pool([fake_openai.url])
        replica = pool.replicas[fake_openai.url]
        replica.breaker.record_failure()  # opened; after 10 ms it is half-open
        half_open = CircuitState.HALF_OPEN
        await await_until(lambda: replica.breaker.state == half_open, what="half-open")
        async with httpx.AsyncClient() as client:
            hc = HealthChecker({"embedding": pool}, client, interval_s=1, timeout_s=1,
                               models_refresh_s=30)  # fmt: skip
            await hc.check_all()
        assert replica.healthy and pool.identity == "fake-decoder@r1"
        assert replica.breaker.state == CircuitState.CLOSED, "a passing check closes half-open"

    asyncio.run(main())


def test_refused_or_not_ready_is_unhealthy_at_once_but_a_slow_one_gets_a_second_chance() -> None:
    async def main() -> None:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        slow = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        refused = f"http://127.0.0.1:{free_port()}"
        with fake("openai", ready_status=503) as unready:  # e.g. a model still loading
            pool = _pool([slow, refused])
            async with httpx.AsyncClient() as client:
                hc = HealthChecker({"embedding": pool}, client, interval_s=1, timeout_s=0.2,
                                   models_refresh_s=30)  # fmt: skip
                await hc.check_all()
                assert not pool.replicas[refused].healthy
                assert pool.replicas[slow].healthy, "one slow check is not enough to eject"
                await hc.check_all()
                assert not pool.replicas[slow].healthy
                pool.set_urls([unready.url], assume_healthy=True)
                await hc.check_all()
                assert not pool.replicas[unready.url].healthy
        server.close()

    asyncio.run(main())
