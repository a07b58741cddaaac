"""endpoint: the toolkit scores what real running services answer.

The classification, generation and embedding services are the session's real processes
(tests/conftest.py). Only the 429/503 retry schedule uses httpx.MockTransport: a real service
cannot be made to answer "busy, retry after N s" at a precise moment on demand.
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from modelfleet_toolkit import datasets
from modelfleet_toolkit.endpoint import (
    EndpointClient,
    EndpointError,
    classify_endpoint,
    embed_endpoint,
    parse_retry_after,
    summarize_endpoint,
)
from modelfleet_toolkit.textmetrics import generation_metrics, semantic_similarity
from services.classification.embedding_classifier import EmbeddingClassifier
from services.classification.evaluate import make_encoder
from tests.support.procs import Proc, free_port


@pytest.fixture(scope="module")
def make_eval_predictions() -> dict[str, list[str]]:
    """The serving default's predictions on the held-out sets, computed as ``make eval`` does."""
    encode, _ = make_encoder("", "cpu")
    clf = EmbeddingClassifier(encode)
    clf.prepare()
    out = {}
    for task in datasets.TASKS:
        texts, _ = datasets.read(task, "test")
        out[task] = [r[0][0] for r in clf.classify(encode(texts), task=task)]
    return out


@pytest.mark.parametrize("task", datasets.TASKS)
def test_heldout_accuracy_through_the_service_matches_make_eval(
    classification_proc: Proc, make_eval_predictions: dict[str, list[str]], task: str
) -> None:
    texts, gold = datasets.read(task, "test")
    served = classify_endpoint(classification_proc.url, texts, task=task, batch_size=32)
    acc = float(np.mean([p == g for p, g in zip(served, gold, strict=True)]))
    local = make_eval_predictions[task]
    acc_local = float(np.mean([p == g for p, g in zip(local, gold, strict=True)]))
    # Same model, same head, same texts: the same answers (batching may move a near tie).
    agree = float(np.mean([a == b for a, b in zip(served, local, strict=True)]))
    assert agree >= 0.99, (task, agree)
    assert abs(acc - acc_local) <= 1 / len(gold) + 1e-9, (acc, acc_local)
    assert acc >= 0.9


def test_custom_labels_and_ranked_scores(classification_proc: Proc) -> None:
    labels = {"sports": "a text about sport", "food": "a text about cooking or eating"}
    with EndpointClient(classification_proc.url) as client:
        ranked = client.classify_ranked(
            ["The striker scored twice", "Simmer the onions for ten minutes"],
            labels=labels,
            batch_size=1,  # two requests, answers kept in input order
        )
    assert [r[0][0] for r in ranked] == ["sports", "food"]
    for r in ranked:
        assert {lab for lab, _ in r} == set(labels)
        assert r[0][1] >= r[1][1] and sum(s for _, s in r) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize(
    ("texts", "kw", "message"),
    [
        (["hello"], {"task": "no-such-task"}, "no-such-task"),
        # a batch over the server's MAX_INPUT_ITEMS (64 in the test fixture)
        (["hello"] * 70, {"task": "intent", "batch_size": 70}, "too many inputs: 70 > 64"),
    ],
)
def test_a_refused_request_raises_the_servers_message_without_retrying(
    classification_proc: Proc, texts: list[str], kw: dict[str, Any], message: str
) -> None:
    waits: list[float] = []
    with (
        EndpointClient(classification_proc.url, sleep=waits.append) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.classify(texts, **kw)
    assert info.value.status == 400 and message in str(info.value)
    assert waits == []


def test_local_argument_errors() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        classify_endpoint("http://127.0.0.1:1", ["x"])
    with pytest.raises(ValueError, match="empty"):
        classify_endpoint("http://127.0.0.1:1", ["ok", "  "], task="intent")
    with pytest.raises(TypeError):
        summarize_endpoint("http://127.0.0.1:1", "one string")


def test_nothing_listening_retries_with_backoff_then_says_so() -> None:
    waits: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"
    with (
        EndpointClient(url, retries=3, backoff_s=0.25, sleep=waits.append) as client,
        pytest.raises(EndpointError, match="cannot connect after 4 attempts"),
    ):
        client.classify(["hi"], task="intent")
    assert waits == [0.25, 0.5, 1.0]


# -- 429/503 and Retry-After (a scripted transport: see the module docstring) ------------------


def _scripted(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handler), seen


def _busy(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {
        "error": {"message": "queue full", "type": "rate_limit_error", "code": None, "param": None}
    }
    return httpx.Response(status, json=body, headers=headers)


OK = httpx.Response(
    200, json={"data": [{"index": 0, "labels": [{"label": "greeting", "score": 1.0}]}]}
)


def test_429_and_503_are_retried_after_retry_after() -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    transport, seen = _scripted(_busy(429, "2"), _busy(503, later), _busy(503, None), OK)
    waits: list[float] = []
    client = EndpointClient(
        "http://fleet", transport=transport, sleep=waits.append, backoff_s=0.5, api_key="k1"
    )
    assert client.classify(["hi"], task="intent") == ["greeting"]
    assert len(seen) == 4
    assert waits[0] == 2.0
    assert 28 <= waits[1] <= 30  # the HTTP date, counted from now
    assert waits[2] == 2.0  # no header: exponential backoff, third attempt
    assert seen[0].headers["authorization"] == "Bearer k1"


def test_gives_up_after_the_retries_and_on_a_long_retry_after() -> None:
    transport, seen = _scripted(*[_busy(503, "1")] * 3)
    client = EndpointClient("http://fleet", transport=transport, retries=2, sleep=lambda s: None)
    with pytest.raises(EndpointError, match=r"503: queue full \(gave up after 3 attempts\)"):
        client.classify(["hi"], task="intent")
    assert len(seen) == 3
    transport, seen = _scripted(_busy(429, "600"))
    client = EndpointClient("http://fleet", transport=transport, max_retry_wait_s=60)
    with pytest.raises(EndpointError, match="retry after 600 s"):
        client.classify(["hi"], task="intent")
    assert len(seen) == 1


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:10 GMT", now) == 10.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


# -- summaries and embeddings ------------------------------------------------------------------

ARTICLES = [
    "The city council met on Tuesday and voted to build a new library in the old market square. "
    "Construction starts in spring and the library should open in two years.",
    "Heavy snow closed the mountain pass for three days. Hundreds of drivers waited in nearby "
    "villages until the road was cleared on Friday.",
]
REFERENCES = [
    "The council voted for a new library in the market square, opening in two years.",
    "Snow closed the mountain pass for three days, stranding drivers until Friday.",
]


def test_summaries_from_the_generation_service_are_scored(generation_proc: Proc) -> None:
    # Few tokens: the point is the path, and a 135M model on a shared CPU is slow.
    summaries = summarize_endpoint(generation_proc.url, ARTICLES, max_tokens=8, timeout_s=300)
    assert len(summaries) == 2 and all(s.strip() for s in summaries)
    scores = generation_metrics(summaries, REFERENCES)
    assert scores["lang"] == "en" and 0 < scores["rouge1"] <= 1 and 0 <= scores["bleu"] <= 100


def test_a_slow_answer_times_out_with_a_clear_error(generation_proc: Proc) -> None:
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match="no answer within"):
        summarize_endpoint(generation_proc.url, ARTICLES[:1], max_tokens=64, timeout_s=0.05)
    assert time.monotonic() - t0 < 5


def test_similarity_through_the_embedding_service_matches_the_packaged_model(
    embedding_proc: Proc,
) -> None:
    preds = ["The meeting was moved to Friday.", "The meeting was moved to Friday."]
    refs = ["They rescheduled the meeting for Friday.", "Penguins live in the south."]
    remote = semantic_similarity(preds, refs, model=embedding_proc.url)
    local = semantic_similarity(preds, refs)
    assert remote == pytest.approx(local, abs=2e-3)
    assert remote[0] > remote[1]
    vecs = embed_endpoint(f"{embedding_proc.url}/v1/embeddings", ["a", "b", "c"], batch_size=2)
    assert len(vecs) == 3 and len(vecs[0]) == 384
