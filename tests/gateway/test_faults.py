"""Fault injection: replicas killed, pools down, backends failing or hanging, load shed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import EMBEDDING_ENV, backend_posts, fake_stats, gateway
from tests.gateway.fakes import fake
from tests.support.procs import Proc, free_port, start_service

CHAT = [{"role": "user", "content": "Say hi."}]
DEAD = "http://127.0.0.1:{}"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def victim() -> Iterator[Proc]:
    """An embedding replica of this test's own, free to kill."""
    proc = start_service("embedding", EMBEDDING_ENV)
    yield proc
    proc.stop()


def dead_url() -> str:
    return DEAD.format(free_port())


def test_killing_one_of_two_replicas_under_load_fails_no_request(
    embedding_proc: Proc, victim: Proc
) -> None:
    results: list[int | str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = c.post("/v1/embeddings", json={"input": f"load {i} {n}"},
                               headers={"Cache-Control": "no-cache, no-store"})  # fmt: skip
                    results.append(r.status_code)
                except httpx.HTTPError as exc:
                    results.append(repr(exc))

    with gateway({"embedding": [embedding_proc.url, victim.url]}) as gw:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 20, "traffic before the kill")
        before_kill = len(results)
        victim.kill()

        def victim_out() -> bool:
            pool = httpx.get(gw.url + "/v1/fleet").json()["pools"]["embedding"]
            return not next(r for r in pool["replicas"] if r["url"] == victim.url)["healthy"]

        wait_for(victim_out, "the killed replica leaving the pool")
        wait_for(lambda: len(results) >= before_kill + 20, "traffic after the kill")
        stop.set()
        for t in threads:
            t.join()
        fleet = httpx.get(gw.url + "/v1/fleet").json()["pools"]["embedding"]
        metrics = httpx.get(gw.url + "/metrics").text
    assert before_kill > 0 and len(results) > before_kill + 10
    assert [r for r in results if r != 200] == []
    dead = next(r for r in fleet["replicas"] if r["url"] == victim.url)
    assert dead["healthy"] is False
    assert 'modelfleet_backend_up{pool="embedding",replica="' + victim.url in metrics


def test_stale_answer_served_when_the_whole_pool_is_down(victim: Proc, redis_proc: Proc) -> None:
    body = {"input": f"remember me {uuid.uuid4().hex}"}
    with gateway({"embedding": victim.url}, redis_proc, {"CACHE_TTL_S": "1"}) as gw:
        first = httpx.post(gw.url + "/v1/embeddings", json=body, timeout=30)
        assert first.headers["x-cache"] == "miss"
        # Past the 1 s TTL: no longer a hit, still kept for fallback. Freshness is the stamp in
        # the entry against the gateway's clock; no event marks it going stale, and a sleep
        # never ends early, so this cannot flake.
        time.sleep(1.3)
        victim.kill()
        r = httpx.post(gw.url + "/v1/embeddings", json=body, timeout=30)
        assert r.status_code == 200
        assert r.headers["x-fleet-degraded"] == "embedding-unavailable; served-by=cache"
        assert r.headers["x-cache"] == "hit" and int(r.headers["age"]) >= 1
        assert r.json()["data"] == first.json()["data"]
        other = httpx.post(gw.url + "/v1/embeddings", json={"input": "never seen"})
        assert_openai_error(other, 503)
        assert 'fallbacks_total{from_pool="embedding",service="gateway",to="cache"} 1.0' in (
            httpx.get(gw.url + "/metrics").text
        )


def test_every_replica_down_is_a_503_with_retry_after() -> None:
    with gateway({"classification": [dead_url(), dead_url()]}) as gw:
        assert httpx.get(gw.url + "/ready").status_code == 503
        r = httpx.post(gw.url + "/v1/classify", json={"input": "x", "task": "sentiment"})
        err = assert_openai_error(r, 503)
        assert err["type"] == "service_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        r = httpx.post(gw.url + "/v1/summarize", json={"input": "a long text"})
        assert_openai_error(r, 503)


def test_502_and_503_are_retried_on_another_replica_then_ejected(embedding_proc: Proc) -> None:
    with fake("status", status=502) as bad, fake("status", status=503) as worse:
        pools = {"embedding": [bad.url, worse.url, embedding_proc.url]}
        env = {"CIRCUIT_FAILURE_THRESHOLD": "2", "CIRCUIT_OPEN_S": "30"}
        with gateway(pools, None, env) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:
            for i in range(12):
                r = c.post("/v1/embeddings", json={"input": f"retry {i}"})
                assert r.status_code == 200, r.text
            fleet = c.get("/v1/fleet").json()["pools"]["embedding"]["replicas"]
            metrics = c.get("/metrics").text
        # Each failed twice, then its circuit opened and it got no more traffic.
        assert fake_stats(bad)["posts"] == 2 and fake_stats(worse)["posts"] == 2
    circuits = {r["url"]: r["circuit"] for r in fleet}
    assert circuits == {bad.url: "open", worse.url: "open", embedding_proc.url: "closed"}
    assert 'upstream_retries_total{pool="embedding",service="gateway"} 4.0' in metrics
    assert 'circuit_state{pool="embedding",replica="' + bad.url + '",service="gateway"} 2.0' in (
        metrics
    )


def test_upstream_503s_everywhere_give_a_503_with_the_backend_s_retry_after() -> None:
    with fake("status", status=503) as a, fake("status", status=503) as b:
        with gateway({"embedding": [a.url, b.url]}, None, {"RETRIES": "5"}) as gw:
            r = httpx.post(gw.url + "/v1/embeddings", json={"input": "x"})
        assert_openai_error(r, 503)
        assert r.headers["retry-after"] == "7"
        # Each replica tried once: retries go to replicas not tried yet.
        assert fake_stats(a)["posts"] == 1 and fake_stats(b)["posts"] == 1


def test_chat_falls_back_to_generation_when_no_llm_replica_is_up(fake_openai: Proc) -> None:
    pools = {"llm": [dead_url(), dead_url()], "generation": fake_openai.url}
    with gateway(pools) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:
        body = {"model": "smollm2", "messages": CHAT, "max_tokens": 5, "temperature": 0}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-fleet-degraded"] == "llm-unavailable; served-by=generation"
        assert r.headers["x-cache"] == "bypass"  # no Redis here
        chat = r.json()
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"] == {"role": "assistant", "content": "fake completion"}
        sent = fake_stats(fake_openai)["body"]
        assert sent == {"prompt": "User: Say hi.\nAssistant:", "max_tokens": 5, "temperature": 0,
                        "stop": ["\nUser:"]}  # fmt: skip

        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            assert s.headers["x-fleet-degraded"] == "llm-unavailable; served-by=generation"
            events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        chunks = [orjson.loads(e) for e in events[:-1]]
        assert events[-1] == "[DONE]"
        assert {ch["object"] for ch in chunks} == {"chat.completion.chunk"}
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == (
            "tok0 tok1 tok2 tok3 tok4 "
        )
        metrics = c.get("/metrics").text
    assert 'fallbacks_total{from_pool="llm",service="gateway",to="generation"} 2.0' in metrics


def test_completions_fall_back_to_llm_and_503_when_both_are_down(fake_openai: Proc) -> None:
    with gateway({"generation": dead_url(), "llm": fake_openai.url}) as gw:
        r = httpx.post(gw.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 3})
        assert r.status_code == 200
        assert r.headers["x-fleet-degraded"] == "generation-unavailable; served-by=llm"
        assert r.json()["object"] == "text_completion"
        assert r.json()["choices"][0]["text"] == "fake chat answer"
    with gateway({"generation": dead_url(), "llm": dead_url()}) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", json={"messages": CHAT})
        assert_openai_error(r, 503)
        assert "retry-after" in r.headers


def test_a_hanging_backend_hits_the_deadline() -> None:
    with (
        fake("hang") as hang,
        gateway({"embedding": hang.url}, None, {"REQUEST_TIMEOUT_S": "1"}) as gw,
    ):
        t0 = time.monotonic()
        r = httpx.post(gw.url + "/v1/embeddings", json={"input": "x"}, timeout=10)
        assert_openai_error(r, 504)
        assert 0.9 < time.monotonic() - t0 < 3


def test_a_stream_is_never_retried_once_it_started() -> None:
    with fake("die-mid-stream") as a, fake("die-mid-stream") as b:
        with gateway({"llm": [a.url, b.url]}) as gw:
            got = []
            body = {"messages": CHAT, "stream": True}
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    got.append(line)
        events = [line for line in got if line.startswith("data: ")]
        assert len(events) >= 4 and "choices" in events[0], events
        # The stream ends cleanly: an OpenAI-shaped error event, then [DONE].
        assert set(orjson.loads(events[-2][6:])["error"]) == {"message", "type", "code", "param"}
        assert events[-1] == "data: [DONE]"
        # One backend died with the stream; the other never saw the request.
        wait_for(lambda: not (a.alive() and b.alive()), "the streaming backend to exit")
        assert sorted([a.alive(), b.alive()]) == [False, True]


def test_the_in_flight_cap_sheds_with_429() -> None:
    with fake("hang") as hang:
        env = {"MAX_IN_FLIGHT": "2", "REQUEST_TIMEOUT_S": "3"}
        with gateway({"embedding": hang.url}, None, env) as gw:
            hung = [
                threading.Thread(target=httpx.post, args=(gw.url + "/v1/embeddings",),
                                 kwargs={"json": {"input": "x"}, "timeout": 10})
                for _ in range(2)
            ]  # fmt: skip
            for t in hung:
                t.start()
            deadline = time.monotonic() + 5
            while httpx.get(gw.url + "/v1/fleet").json()["admission"]["in_flight"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = httpx.post(gw.url + "/v1/embeddings", json={"input": "y"})
            err = assert_openai_error(r, 429)
            assert err["code"] == "overloaded" and r.headers["retry-after"] == "1"
            assert httpx.get(gw.url + "/health").status_code == 200
            for t in hung:
                t.join()


def test_backend_counts_are_unchanged_by_refused_requests(embedding_proc: Proc) -> None:
    before = backend_posts(embedding_proc, "/v1/embeddings")
    with gateway({"embedding": embedding_proc.url}, None, {"API_KEYS": "k-1"}) as gw:
        assert httpx.post(gw.url + "/v1/embeddings", json={"input": "x"}).status_code == 401
    assert backend_posts(embedding_proc, "/v1/embeddings") == before
