"""The shared inference cache: keys, headers, single-flight, and Redis going away and back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.gateway.cache import CacheControl, SingleFlight, cache_key
from tests.gateway.conftest import backend_posts, fake_stats, gateway
from tests.support.procs import Proc, await_until, start_redis, wait_until

EMB = "/v1/embeddings"


def unique(tag: str) -> str:
    return f"{tag} {uuid.uuid4().hex[:8]}"


# -- keys and directives ---------------------------------------------------------------------
def test_key_is_canonical_json_plus_route_and_model_identity() -> None:
    k = cache_key(EMB, "minilm@sha256:1", {"input": ["a"], "model": "m"})
    assert k == cache_key(EMB, "minilm@sha256:1", {"model": "m", "input": ["a"]})
    assert k != cache_key(EMB, "minilm@sha256:2", {"input": ["a"], "model": "m"})
    assert k != cache_key("/v1/similarity", "minilm@sha256:1", {"input": ["a"], "model": "m"})
    assert k != cache_key(EMB, "minilm@sha256:1", {"input": ["b"], "model": "m"})
    # v2: keys carry the tenant (an API key's id), unless the route is shared across tenants.
    assert k.startswith("mf:cache:v2:/v1/embeddings:")
    assert k != cache_key(EMB, "minilm@sha256:1", {"input": ["a"], "model": "m"}, "key:abc")


def test_cache_control_directives() -> None:
    assert CacheControl.parse(None) == CacheControl(False, False)
    assert CacheControl.parse("No-Cache") == CacheControl(True, False)
    assert CacheControl.parse("max-age=0, no-store") == CacheControl(False, True)


def test_single_flight_runs_once_and_survives_the_first_caller_leaving() -> None:
    calls = 0
    release = asyncio.Event()  # the backend answers when the test says so

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    async def main() -> None:
        sf: SingleFlight[str] = SingleFlight()
        first = asyncio.ensure_future(sf.do("k", work))
        await await_until(lambda: sf.in_flight() == 1, what="the leader's flight")
        others = [asyncio.ensure_future(sf.do("k", work)) for _ in range(5)]
        await await_until(lambda: sf.shared == 5, what="five callers joining the flight")
        first.cancel()  # the leader's client went away
        release.set()
        results = await asyncio.gather(*others)
        assert results == [("answer", True)] * 5 and first.cancelled()
        assert calls == 1 and sf.in_flight() == 0

        async def boom() -> str:
            raise RuntimeError("backend down")

        with pytest.raises(RuntimeError):
            await sf.do("k2", boom)
        assert sf.in_flight() == 0

    asyncio.run(main())


# -- through a real gateway -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw(embedding_pair: tuple[Proc, Proc], fake_openai: Proc, redis_proc: Proc) -> Iterator[Proc]:
    a, b = embedding_pair
    pools = {"embedding": [a.url, b.url], "llm": fake_openai.url}
    with gateway(pools, redis_proc, {"CACHE_MAX_VALUE_BYTES": "20000"}) as proc:
        yield proc


def posts(pair: tuple[Proc, Proc], route: str = EMB) -> int:
    return sum(backend_posts(p, route) for p in pair)


def post(gw: Proc, route: str, body: object, cc: str | None = None) -> httpx.Response:
    headers = {"Cache-Control": cc} if cc else {}
    r = httpx.post(gw.url + route, json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r


def eventually_hit(gw: Proc, route: str, body: object) -> httpx.Response:
    """The write happens just after the answer goes out: allow it a moment."""
    for _ in range(50):
        r = post(gw, route, body)
        if r.headers["x-cache"] == "hit":
            return r
        time.sleep(0.02)
    raise AssertionError("never became a hit")


def test_miss_then_hit_for_the_same_request_in_any_key_order(
    gw: Proc, embedding_pair: tuple[Proc, Proc]
) -> None:
    text = unique("cache me")
    before = posts(embedding_pair)
    first = post(gw, EMB, {"input": [text], "model": "all-MiniLM-L6-v2"})
    assert first.headers["x-cache"] == "miss"
    again = eventually_hit(gw, EMB, {"model": "all-MiniLM-L6-v2", "input": [text]})
    assert again.json() == first.json()
    assert int(again.headers["age"]) >= 0
    assert posts(embedding_pair) - before == 1


def test_no_cache_bypasses_the_lookup_but_refreshes_the_entry(
    gw: Proc, embedding_pair: tuple[Proc, Proc]
) -> None:
    body = {"input": unique("fresh please")}
    post(gw, EMB, body)
    eventually_hit(gw, EMB, body)
    before = posts(embedding_pair)
    assert post(gw, EMB, body, "no-cache").headers["x-cache"] == "bypass"
    assert posts(embedding_pair) - before == 1
    assert post(gw, EMB, body).headers["x-cache"] == "hit"


def test_no_store_answers_without_writing(gw: Proc) -> None:
    body = {"input": unique("do not keep")}
    assert post(gw, EMB, body, "no-store").headers["x-cache"] == "miss"
    # A write would have been sent to Redis as the answer went out. Redis runs commands in
    # the order they arrive, so once a later request's write has landed (its hit), so has
    # any write of the first.
    eventually_hit(gw, EMB, {"input": unique("written after")})
    assert post(gw, EMB, body).headers["x-cache"] == "miss"


def _skipped_too_large(gw: Proc) -> int:
    return int(httpx.get(gw.url + "/v1/fleet").json()["cache"]["skipped_too_large"])


def test_answers_over_the_size_cap_are_not_stored(gw: Proc) -> None:
    body = {"input": [unique(f"big {i}") for i in range(8)]}  # ~40 kB of vectors > 20 kB cap
    skipped = _skipped_too_large(gw)
    assert post(gw, EMB, body).headers["x-cache"] == "miss"
    wait_until(lambda: _skipped_too_large(gw) > skipped, what="the write to be skipped")
    assert post(gw, EMB, body).headers["x-cache"] == "miss"


def test_similarity_is_cached(gw: Proc) -> None:
    body = {"query": unique("reset password"), "documents": ["password help", "tax form"]}
    assert post(gw, "/v1/similarity", body).headers["x-cache"] == "miss"
    eventually_hit(gw, "/v1/similarity", body)


def test_only_greedy_unstreamed_chat_is_cached(gw: Proc, fake_openai: Proc) -> None:
    messages = [{"role": "user", "content": unique("hello")}]
    assert post(gw, "/v1/chat/completions", {"messages": messages, "temperature": 0}).headers[
        "x-cache"
    ] == "miss"  # fmt: skip
    eventually_hit(gw, "/v1/chat/completions", {"messages": messages, "temperature": 0.0})
    before = fake_stats(fake_openai)["posts"]
    r = post(gw, "/v1/chat/completions", {"messages": messages, "temperature": 0.7})
    assert "x-cache" not in r.headers
    assert fake_stats(fake_openai)["posts"] == before + 1


def test_identical_concurrent_misses_make_one_backend_call(
    gw: Proc, embedding_pair: tuple[Proc, Proc]
) -> None:
    # A heavy body keeps the first call in flight while the others arrive.
    body = {"input": [unique(f"single flight {i}") for i in range(3)] * 20}
    before = posts(embedding_pair)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
            return await asyncio.gather(*(c.post(EMB, json=body) for _ in range(8)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    assert {r.headers["x-cache"] for r in responses} == {"miss"}
    assert len({r.content for r in responses}) == 1
    assert posts(embedding_pair) - before == 1


def test_no_cache_requests_are_not_coalesced(gw: Proc, embedding_pair: tuple[Proc, Proc]) -> None:
    body = {"input": [unique("each their own")] * 20}
    before = posts(embedding_pair)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
            cc = {"Cache-Control": "no-cache"}
            return await asyncio.gather(*(c.post(EMB, json=body, headers=cc) for _ in range(4)))

    assert {r.headers["x-cache"] for r in asyncio.run(burst())} == {"bypass"}
    assert posts(embedding_pair) - before == 4


def test_classify_is_cached(classification_proc: Proc, redis_proc: Proc) -> None:
    body = {"input": [unique("I love this")], "task": "sentiment"}
    with gateway({"classification": classification_proc.url}, redis_proc) as gw:
        assert post(gw, "/v1/classify", body).headers["x-cache"] == "miss"
        eventually_hit(gw, "/v1/classify", body)


def test_redis_outage_never_fails_a_request_and_caching_resumes(
    embedding_pair: tuple[Proc, Proc],
) -> None:
    a, b = embedding_pair
    redis = start_redis()
    env = {"REDIS_BACKOFF_MAX_S": "0.5", "RATE_LIMIT_RPM": "100000", "RATE_LIMIT_TPM": "10000000"}
    try:
        with gateway({"embedding": [a.url, b.url]}, redis, env) as gw:
            warm = {"input": unique("before the outage")}
            post(gw, EMB, warm)
            eventually_hit(gw, EMB, warm)

            redis.kill()
            statuses, caches, slowest = [], set(), 0.0
            for i in range(20):
                t0 = time.monotonic()
                r = httpx.post(gw.url + EMB, json=warm if i % 2 else {"input": f"x{i}"}, timeout=30)
                slowest = max(slowest, time.monotonic() - t0)
                statuses.append(r.status_code)
                caches.add(r.headers.get("x-cache"))
            assert statuses == [200] * 20
            assert caches == {"bypass"}
            assert slowest < 2.0
            metrics = httpx.get(gw.url + "/metrics").text
            assert 'modelfleet_redis_up{service="gateway"} 0.0' in metrics
            assert _counter(metrics, 'result="error"') >= 20

            redis = start_redis(port=redis.port)  # back on the same port, empty
            deadline = time.monotonic() + 10
            while not httpx.get(gw.url + "/v1/fleet").json()["cache"]["redis"]["up"]:
                assert time.monotonic() < deadline, "the gateway never saw Redis come back"
                time.sleep(0.1)
            after = {"input": unique("after the outage")}
            assert post(gw, EMB, after).headers["x-cache"] == "miss"
            eventually_hit(gw, EMB, after)
    finally:
        redis.stop()


def _counter(metrics: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("modelfleet_cache_requests_total{") and label in line
    )
