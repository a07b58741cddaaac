"""The embedding service over HTTP: the official openai client, similarity, bad input."""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import time

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def client(embedding_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{embedding_proc.url}/v1", api_key="unused")


def test_openai_client_single_and_batch(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model="all-MiniLM-L6-v2", input="hello world")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens > 0
    many = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a cat", "a dog", "tax"])
    assert [d.index for d in many.data] == [0, 1, 2]
    v = np.array([d.embedding for d in many.data])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    # The batched answer for "hello world" equals the single one.
    again = client.embeddings.create(model="m", input=["hello world", "padding text here"])
    np.testing.assert_allclose(again.data[0].embedding, one.data[0].embedding, atol=1e-5)


def test_float_and_base64_agree(embedding_proc: Proc) -> None:
    url = f"{embedding_proc.url}/v1/embeddings"
    f = httpx.post(url, json={"input": "same text", "encoding_format": "float"}).json()
    b = httpx.post(url, json={"input": "same text", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, f["data"][0]["embedding"], atol=1e-6)


def test_dimensions_truncates_and_renormalises(client: openai.OpenAI) -> None:
    full = client.embeddings.create(model="m", input="truncate me").data[0].embedding
    short = client.embeddings.create(model="m", input="truncate me", dimensions=64)
    vec = np.array(short.data[0].embedding)
    assert vec.shape == (64,)
    assert abs(np.linalg.norm(vec) - 1) < 1e-4
    expected = np.array(full[:64]) / np.linalg.norm(full[:64])
    np.testing.assert_allclose(vec, expected, atol=1e-5)


def test_similarity_ranks_the_paraphrase_first(embedding_proc: Proc) -> None:
    body = {
        "query": "How do I reset my password?",
        "documents": [
            "The stock market fell sharply today.",
            "Steps to recover a forgotten password for your account.",
            "A recipe for banana bread.",
        ],
    }
    r = httpx.post(f"{embedding_proc.url}/v1/similarity", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and out["usage"]["prompt_tokens"] > 0
    assert out["data"][0]["index"] == 1
    scores = [d["score"] for d in out["data"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    top = httpx.post(f"{embedding_proc.url}/v1/similarity", json={**body, "top_n": 1}).json()
    assert len(top["data"]) == 1


def test_overlong_input_is_truncated_and_flagged(embedding_proc: Proc) -> None:
    long_text = "word " * 2000
    r = httpx.post(f"{embedding_proc.url}/v1/embeddings", json={"input": [long_text, "short"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0].get("truncated") is True and "truncated" not in data[1]
    assert r.json()["usage"]["prompt_tokens"] <= 256 + 10


def test_concurrent_requests_get_their_own_answers(embedding_proc: Proc) -> None:
    url = f"{embedding_proc.url}/v1/embeddings"
    texts = [f"sentence number {i}" for i in range(24)]
    solo = {t: httpx.post(url, json={"input": t}).json()["data"][0]["embedding"] for t in texts[:3]}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: httpx.post(url, json={"input": t}).json(), texts))
    for t, r in zip(texts, results, strict=True):
        if t in solo:
            np.testing.assert_allclose(r["data"][0]["embedding"], solo[t], atol=1e-5)
    batch_hist = httpx.get(f"{embedding_proc.url}/metrics").text
    assert 'modelfleet_batch_size_count{service="embedding"}' in batch_hist


BAD_BODIES = [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": 42}, "input"),
    ({"input": [1, "two", 3]}, "input"),  # token ids and texts do not mix
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 100000}, "dimensions"),
    ({"input": ["x"] * 65}, "input"),
    ({}, "input"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
def test_bad_embedding_input_is_a_clean_400(embedding_proc: Proc, body: object, param: str
                                            ) -> None:  # fmt: skip
    err = assert_openai_error(httpx.post(f"{embedding_proc.url}/v1/embeddings", json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert param in str(err["param"]) or param in str(err["message"])


def test_malformed_json_and_huge_input(embedding_proc: Proc) -> None:
    url = f"{embedding_proc.url}/v1/embeddings"
    assert_openai_error(
        httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}),
        400,
    )
    assert_openai_error(httpx.post(url, json={"input": "x" * 200_001}), 413)
    assert_openai_error(httpx.post(f"{embedding_proc.url}/v1/similarity", json={"query": "q"}),
                        400)  # fmt: skip
    # Still serving afterwards.
    assert httpx.post(url, json={"input": "still here"}).status_code == 200


def test_operational_endpoints(embedding_proc: Proc) -> None:
    assert httpx.get(f"{embedding_proc.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{embedding_proc.url}/ready").status_code == 200
    models = httpx.get(f"{embedding_proc.url}/v1/models").json()
    card = models["data"][0]
    assert card["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert card["revision"].startswith("sha256:")
    r = httpx.post(
        f"{embedding_proc.url}/v1/embeddings", json={"input": "x"},
        headers={"X-Request-ID": "test-rid-123"},
    )  # fmt: skip
    assert r.headers["x-request-id"] == "test-rid-123"
    assert len(httpx.get(f"{embedding_proc.url}/health").headers["x-request-id"]) == 32
    metrics = httpx.get(f"{embedding_proc.url}/metrics").text
    for name in (
        "modelfleet_requests_total",
        "modelfleet_request_duration_seconds_bucket",
        "modelfleet_requests_in_flight",
        "modelfleet_batch_size_bucket",
        "modelfleet_queue_depth",
        "modelfleet_model_load_seconds",
        "modelfleet_input_tokens_total",
    ):
        assert name in metrics, name
    assert 'route="/v1/embeddings",service="embedding",status="200"' in metrics


def test_request_id_is_in_the_json_log_lines(embedding_proc: Proc) -> None:
    import json
    import time

    httpx.post(f"{embedding_proc.url}/v1/embeddings", json={"input": "log me"},
               headers={"X-Request-ID": "rid-in-logs-42"})  # fmt: skip
    time.sleep(0.3)
    lines = [json.loads(x) for x in embedding_proc.log_path.read_text().splitlines()
             if x.startswith("{")]  # fmt: skip
    mine = [x for x in lines if x.get("request_id") == "rid-in-logs-42"]
    assert mine and mine[0]["service"] == "embedding" and mine[0]["status"] == 200


def test_curl_style_form_content_type_is_read_as_json(embedding_proc: Proc) -> None:
    r = httpx.post(
        f"{embedding_proc.url}/v1/embeddings",
        content=b'{"input": "sent the way curl -d sends it"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_a_client_gone_mid_body_is_counted_as_499_not_an_error(embedding_proc: Proc) -> None:
    # Half a body, then hang up: no response is possible, and it is not the server's fault.
    with socket.create_connection(("127.0.0.1", embedding_proc.port), timeout=5) as sock:
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"input"')
    line = 'route="/v1/embeddings",service="embedding",status="499"'
    deadline = time.monotonic() + 5
    while line not in httpx.get(f"{embedding_proc.url}/metrics").text:
        assert time.monotonic() < deadline, "no 499 recorded"
        time.sleep(0.05)
    ok = httpx.post(f"{embedding_proc.url}/v1/embeddings", json={"input": "ok"})
    assert ok.status_code == 200
