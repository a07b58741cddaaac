"""The API through a real gateway: the official openai client, bad input, streams, headers."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import backend_posts, fake_stats, gateway
from tests.support.procs import Proc

NO_CACHE = {"Cache-Control": "no-cache, no-store"}
CHAT: list[Any] = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def gw(embedding_pair: tuple[Proc, Proc], fake_openai: Proc, redis_proc: Proc) -> Iterator[Proc]:
    a, b = embedding_pair
    pools = {"embedding": [a.url, b.url], "llm": fake_openai.url, "generation": fake_openai.url}
    with gateway(pools, redis_proc, {"MAX_BODY_BYTES": "65536"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(gw: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="not-checked-here", max_retries=0)


def test_openai_client_embeddings(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        input=["the gateway", "forwards bytes"], model="all-MiniLM-L6-v2"
    )
    assert raw.headers["x-cache"] in ("miss", "hit")
    res = raw.parse()
    assert [d.index for d in res.data] == [0, 1]
    assert len(res.data[0].embedding) == 384
    assert res.usage.prompt_tokens > 0


def test_openai_client_chat_completions_and_stream(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(model="fake", messages=CHAT, max_tokens=4)
    assert chat.object == "chat.completion" and chat.choices[0].message.content
    stream = client.chat.completions.create(model="fake", messages=CHAT, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p or "" for p in pieces).startswith("tok0 tok1")


def test_openai_client_completions(client: openai.OpenAI) -> None:
    out = client.completions.create(model="fake", prompt="Once upon", max_tokens=4)
    assert out.object == "text_completion" and out.choices[0].text


def test_openai_client_lists_every_pool_s_models(client: openai.OpenAI) -> None:
    cards = [m.model_extra or {} for m in client.models.list().data]
    assert {"embedding", "llm", "generation"} <= {c.get("service") for c in cards}
    emb = next(c for c in cards if c.get("service") == "embedding")
    assert emb["replicas"] == 2 and emb["revision"]


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/embeddings", b"{not json", None),
        ("/v1/embeddings", b"[1, 2]", None),
        # "yes" would be a valid (lax) boolean for the service's model, so for the gateway too.
        ("/v1/chat/completions", b'{"messages": [], "stream": "maybe"}', "stream"),
        ("/v1/chat/completions", b'{"messages": [], "temperature": "hot"}', "temperature"),
    ],
)
def test_malformed_requests_stop_at_the_gateway(
    gw: Proc, fake_openai: Proc, route: str, body: bytes, param: str | None
) -> None:
    before = fake_stats(fake_openai)["posts"]
    r = httpx.post(gw.url + route, content=body, headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert fake_stats(fake_openai)["posts"] == before


@pytest.mark.parametrize(
    "body",
    [{"input": 5}, {"input": []}, {"input": [""]}, {"input": "x", "dimensions": 0}, {}],
)
def test_bad_input_is_a_4xx_from_the_backend_never_a_500(
    gw: Proc, embedding_pair: tuple[Proc, Proc], body: dict[str, object]
) -> None:
    r = httpx.post(gw.url + "/v1/embeddings", json=body, headers=NO_CACHE, timeout=30)
    assert_openai_error(r, 400)


def test_body_over_the_cap_is_a_413(gw: Proc) -> None:
    big = {"input": "x" * 70_000}
    r = httpx.post(gw.url + "/v1/embeddings", json=big, timeout=30)
    assert_openai_error(r, 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        yield b'{"input": "'
        yield b"y" * 70_000
        yield b'"}'

    r = httpx.post(gw.url + "/v1/embeddings", content=chunked(), timeout=30)
    assert_openai_error(r, 413)


def test_request_id_reaches_the_backend_and_comes_back(gw: Proc, fake_openai: Proc) -> None:
    r = httpx.post(
        gw.url + "/v1/completions",
        json={"prompt": "hi"},
        headers={"X-Request-ID": "trace-me-123"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-me-123"
    assert fake_stats(fake_openai)["request_id"] == "trace-me-123"


def test_the_body_reaches_the_backend_byte_for_byte(gw: Proc, fake_openai: Proc) -> None:
    body = b'{"prompt":  "spacing and key order are the client\'s", "max_tokens":3,'
    body += b' "a":{"z":1,"b":2}}'
    assert httpx.post(gw.url + "/v1/completions", content=body).status_code == 200
    assert fake_stats(fake_openai)["raw"] == body.decode()


def test_sse_passes_through_chunk_by_chunk(gw: Proc) -> None:
    arrivals = []
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json={"messages": CHAT, "stream": True}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "x-cache" not in r.headers
        t0 = time.monotonic()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - t0)
    # The fake backend sends 5 events 0.2 s apart; buffering would bunch them at the end.
    assert len(arrivals) == 5
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.1 < g < 0.5 for g in gaps), gaps


def test_cacheable_responses_say_so_and_streams_do_not(gw: Proc) -> None:
    greedy = {"messages": CHAT, "temperature": 0}
    assert httpx.post(gw.url + "/v1/chat/completions", json=greedy).headers["x-cache"] in (
        "miss", "hit"
    )  # fmt: skip
    hot = httpx.post(gw.url + "/v1/chat/completions", json={"messages": CHAT, "temperature": 1})
    assert hot.status_code == 200 and "x-cache" not in hot.headers


def test_operational_routes_docs_and_fleet(gw: Proc) -> None:
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
    assert httpx.get(gw.url + "/ready").status_code == 200
    paths = httpx.get(gw.url + "/openapi.json").json()["paths"]
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/summarize", "/v1/embeddings",
                  "/v1/similarity", "/v1/classify", "/v1/models", "/v1/fleet"):  # fmt: skip
        assert route in paths
    doc = httpx.get(gw.url + "/openapi.json").json()
    body = paths["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    assert name == "EmbeddingRequest"  # the embedding service's own model
    assert "input" in doc["components"]["schemas"][name]["properties"]
    assert "get" in paths["/v1/classify/tasks"]
    fleet = httpx.get(gw.url + "/v1/fleet").json()
    emb = fleet["pools"]["embedding"]
    assert emb["healthy"] == 2 and {r["circuit"] for r in emb["replicas"]} == {"closed"}
    assert fleet["pools"]["classification"]["replicas"] == []
    assert fleet["cache"]["redis"]["up"] is True and fleet["routing"] == "round_robin"
    metrics = httpx.get(gw.url + "/metrics").text
    for name in ("modelfleet_requests_total", "modelfleet_upstream_duration_seconds_bucket",
                 "modelfleet_backend_up", "modelfleet_circuit_state", "modelfleet_redis_up",
                 "modelfleet_cache_requests_total", "modelfleet_fallbacks_total",
                 "modelfleet_rate_limited_total", "modelfleet_upstream_retries_total"):  # fmt: skip
        assert name in metrics, name
    assert 'modelfleet_requests_total{route="/v1/chat/completions",service="gateway"' in metrics


def test_concurrent_clients_share_keep_alive_connections(
    gw: Proc, embedding_pair: tuple[Proc, Proc]
) -> None:
    a, _ = embedding_pair
    before = backend_posts(a, "/v1/embeddings")
    errors: list[int] = []

    def worker(i: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=60) as c:
            for j in range(5):
                r = c.post("/v1/embeddings", json={"input": f"w{i} r{j}"}, headers=NO_CACHE)
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert backend_posts(a, "/v1/embeddings") - before == 20
