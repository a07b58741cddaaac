"""Promises of the gateway that no other test pinned: each broke once with the suite green.

Real processes only: a real gateway in front of the real model services and a real Redis.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.procs import Proc

EMB = "/v1/embeddings"
CLASSIFY = "/v1/classify"


def unique(tag: str) -> str:
    return f"{tag} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gw(
    embedding_proc: Proc, classification_proc: Proc, generation_proc: Proc, redis_proc: Proc
) -> Iterator[Proc]:
    pools = {
        "embedding": embedding_proc.url,
        "classification": classification_proc.url,
        "generation": generation_proc.url,
    }
    with gateway(pools, redis_proc, {"MAX_BODY_BYTES": "65536"}) as proc:
        yield proc


def cached_post(gw: Proc, route: str, body: dict[str, object]) -> httpx.Response:
    """POST until the answer is a cache hit (the write lands just after the first answer)."""
    deadline = time.monotonic() + 10
    while True:
        r = httpx.post(gw.url + route, json=body, timeout=60)
        assert r.status_code == 200, r.text
        if r.headers["x-cache"] == "hit" or time.monotonic() > deadline:
            return r
        time.sleep(0.02)  # poll interval, bounded by the deadline above


def test_the_cache_key_changes_with_dimensions(gw: Proc) -> None:
    text = unique("dimensions matter")
    small = cached_post(gw, EMB, {"input": text, "dimensions": 8})
    assert small.headers["x-cache"] == "hit"
    assert len(small.json()["data"][0]["embedding"]) == 8
    wide = httpx.post(gw.url + EMB, json={"input": text, "dimensions": 16}, timeout=60)
    assert wide.status_code == 200, wide.text
    assert wide.headers["x-cache"] == "miss"
    assert len(wide.json()["data"][0]["embedding"]) == 16


def test_the_cache_key_changes_with_task_and_labels(gw: Proc) -> None:
    text = unique("I really love this product")
    by_task = cached_post(gw, CLASSIFY, {"input": text, "task": "sentiment"})
    assert by_task.headers["x-cache"] == "hit"
    labels = ["sports", "cooking"]
    by_labels = httpx.post(gw.url + CLASSIFY, json={"input": text, "labels": labels}, timeout=60)
    assert by_labels.status_code == 200, by_labels.text
    assert by_labels.headers["x-cache"] == "miss"
    assert {x["label"] for x in by_labels.json()["data"][0]["labels"]} == set(labels)
    cached_post(gw, CLASSIFY, {"input": text, "labels": labels})
    other = httpx.post(
        gw.url + CLASSIFY, json={"input": text, "labels": ["music", "travel"]}, timeout=60
    )
    assert other.headers["x-cache"] == "miss"
    assert {x["label"] for x in other.json()["data"][0]["labels"]} == {"music", "travel"}


def raw_stream(url: str, body: dict[str, object]) -> bytes:
    """The response body exactly as it came off the wire (chunked framing removed)."""
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return b"".join(r.iter_raw())


@pytest.mark.parametrize("via", ["service", "gateway"])
def test_a_completions_stream_ends_with_done_on_the_wire(
    via: str, gw: Proc, generation_proc: Proc
) -> None:
    base = gw.url if via == "gateway" else generation_proc.url
    body = {"prompt": "Once upon a time", "max_tokens": 4, "stream": True}
    raw = raw_stream(base + "/v1/completions", body)
    assert raw.startswith(b"data: {")
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    assert raw.count(b"[DONE]") == 1


def test_an_oversized_content_length_is_refused_before_the_body_is_sent(gw: Proc) -> None:
    head = (
        f"POST {EMB} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head)  # headers only: the body is never sent
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {answer!r}"
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    with httpx.Client() as client:  # and the body is the one OpenAI-shaped error
        r = client.post(gw.url + EMB, content=b"x" * 70000, timeout=30)
    assert_openai_error(r, 413)


def test_get_routes_of_the_services_pass_through_the_gateway(
    gw: Proc, classification_proc: Proc
) -> None:
    direct = httpx.get(classification_proc.url + "/v1/classify/tasks", timeout=30)
    through = httpx.get(gw.url + "/v1/classify/tasks", timeout=30)
    assert through.status_code == 200, through.text
    assert through.json() == direct.json()
    assert {t["task"] for t in through.json()["data"]} >= {"sentiment", "intent"}
