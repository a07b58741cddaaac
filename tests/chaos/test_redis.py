"""Redis slow, Redis gone.

Documented behaviour (README, "Chaos tier"): Redis is an optimisation, never a dependency.
- Redis slow (latency injected by a TCP proxy in front of a real redis-server): a request pays
  at most one REDIS_TIMEOUT_S, then the gateway marks Redis down and serves straight from the
  backends; when Redis is fast again the gateway finds it (backing off up to
  REDIS_BACKOFF_MAX_S) and the answers cached before are hits again.
- Redis gone (the process stopped for CHAOS_REDIS_OUTAGE_S, default 60 s): every request
  still gets its 200 meanwhile; when Redis is back, caching resumes.
"""

from __future__ import annotations

import os
import time

import httpx

from tests.chaos.netfaults import latency_proxy
from tests.gateway.conftest import gateway
from tests.support.procs import Proc, start_redis

OUTAGE_S = float(os.environ.get("CHAOS_REDIS_OUTAGE_S", "60"))
ENV = {"REDIS_TIMEOUT_S": "0.25", "REDIS_BACKOFF_MAX_S": "1"}


def redis_up(gw: Proc) -> bool:
    fleet = httpx.get(gw.url + "/v1/fleet", timeout=5).json()
    return bool(fleet["cache"]["redis"]["up"])


def wait_redis(gw: Proc, up: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while redis_up(gw) is not up:
        assert time.monotonic() < deadline, f"redis up={up} not seen in {timeout}s"
        time.sleep(0.1)


def embed(c: httpx.Client, text: str) -> httpx.Response:
    r = c.post("/v1/embeddings", json={"input": text})
    assert r.status_code == 200, r.text
    return r


def test_slow_redis_costs_one_timeout_then_is_bypassed_until_it_recovers(
    embedding_proc: Proc, redis_proc: Proc
) -> None:
    with latency_proxy(redis_proc.port) as proxy:
        env = {**ENV, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
        with (
            gateway({"embedding": embedding_proc.url}, None, env) as gw,
            httpx.Client(base_url=gw.url, timeout=30) as c,
        ):
            tag = f"slow-redis {time.time()}"
            embed(c, tag)
            deadline = time.monotonic() + 5
            while embed(c, tag).headers["x-cache"] != "hit":  # the write is after the reply
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proxy.delay_s = 2.0
            for i in range(10):
                t0 = time.monotonic()
                r = embed(c, f"{tag} {i}")
                # One REDIS_TIMEOUT_S at most on top of the backend's own time.
                assert time.monotonic() - t0 < 2.0, r.headers
            assert not redis_up(gw)
            proxy.delay_s = 0.0
            wait_redis(gw, up=True)
            assert embed(c, tag).headers["x-cache"] == "hit"


def test_redis_gone_for_a_while_loses_no_request(embedding_proc: Proc) -> None:
    redis = start_redis()
    port = redis.port
    try:
        with (
            gateway({"embedding": embedding_proc.url}, redis, ENV) as gw,
            httpx.Client(base_url=gw.url, timeout=30) as c,
        ):
            tag = f"gone {time.time()}"
            embed(c, tag)
            redis.kill()
            end = time.monotonic() + OUTAGE_S
            served = 0
            while time.monotonic() < end:
                embed(c, f"{tag} {served}")
                served += 1
            assert not redis_up(gw)
            redis = start_redis(port)
            wait_redis(gw, up=True)
            embed(c, tag + " after")
            deadline = time.monotonic() + 5
            while embed(c, tag + " after").headers["x-cache"] != "hit":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert served > 0
    finally:
        redis.stop()
