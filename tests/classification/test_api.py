"""The classification service over HTTP: built-in tasks, custom labels, bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc


def classify(proc: Proc, **body: object) -> httpx.Response:
    return httpx.post(f"{proc.url}/v1/classify", json=body, timeout=30)


def test_sentiment_batch_in_order_with_distributions(classification_proc: Proc) -> None:
    texts = [
        "I absolutely love this phone, the battery lasts forever!",
        "This was the worst customer service I have ever experienced.",
        "The package was delivered on Tuesday.",
    ]
    r = classify(classification_proc, input=texts, task="sentiment")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and out["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    tops = [d["labels"][0]["label"] for d in out["data"]]
    assert tops == ["positive", "negative", "neutral"]
    for d in out["data"]:
        scores = [x["score"] for x in d["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert abs(sum(scores) - 1) < 1e-4
        assert {x["label"] for x in d["labels"]} == {"positive", "negative", "neutral"}


def test_intent_and_top_k(classification_proc: Proc) -> None:
    tasks = httpx.get(f"{classification_proc.url}/v1/classify/tasks").json()["data"]
    intents = next(t for t in tasks if t["task"] == "intent")["labels"]
    assert len(intents) >= 6
    r = classify(classification_proc, input="Hi there, good morning!", task="intent", top_k=2)
    assert r.status_code == 200, r.text
    labels = r.json()["data"][0]["labels"]
    assert len(labels) == 2 and labels[0]["label"] in intents


def test_custom_labels_zero_shot_list_and_descriptions(classification_proc: Proc) -> None:
    r = classify(
        classification_proc,
        input=["The striker scored twice in the final.", "The new GPU doubles inference speed."],
        labels=["sports", "technology", "cooking"],
    )
    assert r.status_code == 200, r.text
    assert [d["labels"][0]["label"] for d in r.json()["data"]] == ["sports", "technology"]
    r = classify(
        classification_proc,
        input="Preheat the oven and knead the dough.",
        labels={"food": "cooking, recipes and food", "finance": "money, banking and markets"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["labels"][0]["label"] == "food"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": "", "task": "sentiment"}, 400),
        ({"input": [], "task": "sentiment"}, 400),
        ({"input": ["fine", ""], "task": "sentiment"}, 400),
        ({"input": 5, "task": "sentiment"}, 400),
        ({"input": "x", "task": "horoscope"}, 400),
        ({"input": "x"}, 400),
        ({"input": "x", "task": "sentiment", "labels": ["a", "b"]}, 400),
        ({"input": "x", "labels": ["only-one"]}, 400),
        ({"input": "x", "labels": ["a", "A"]}, 400),
        ({"input": "x", "labels": "not-a-list"}, 400),
        ({"input": "x", "task": "sentiment", "top_k": 0}, 400),
        ({"input": "x", "task": "sentiment", "temperature": 1}, 400),
        ({"input": ["x"] * 65, "task": "sentiment"}, 400),
        ({"input": "x" * 200_001, "task": "sentiment"}, 413),
    ],
)
def test_bad_input_is_a_clean_4xx(classification_proc: Proc, body: dict[str, object],
                                  status: int) -> None:  # fmt: skip
    assert_openai_error(classify(classification_proc, **body), status)


def test_overlong_input_is_truncated_and_service_keeps_serving(classification_proc: Proc) -> None:
    r = classify(classification_proc, input="terrible awful " * 500, task="sentiment")
    assert r.status_code == 200, r.text
    assert r.json()["data"][0].get("truncated") is True
    bad = httpx.post(f"{classification_proc.url}/v1/classify", content=b"[[[",
                     headers={"content-type": "application/json"})  # fmt: skip
    assert_openai_error(bad, 400)
    assert classify(classification_proc, input="great", task="sentiment").status_code == 200
