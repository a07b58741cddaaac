"""``FRONTENDS=2`` classification answers as one process does, its errors included.

The process tree, deadlines, queue limits and a dead worker are shared code, tested through the
embedding service (tests/embedding/test_frontends.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import assert_openai_error, post_both
from tests.support.procs import Proc, service


@pytest.fixture(scope="module")
def split() -> Iterator[Proc]:
    with service("classification", {"FRONTENDS": "2", "MAX_INPUT_ITEMS": "64"}) as proc:
        yield proc


BODIES = [
    {"input": ["I love it", "this is awful"], "task": "sentiment"},
    {"input": "Hi there, good morning!", "task": "intent", "top_k": 2},
    {"input": "The striker scored twice.", "labels": ["sports", "technology", "cooking"]},
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_two_frontends_classify_as_one_process(
    classification_proc: Proc, split: Proc, body: object
) -> None:
    ja, jb = post_both(classification_proc, split, "/v1/classify", body)
    for x, y in zip(ja["data"], jb["data"], strict=True):
        assert [lbl["label"] for lbl in x["labels"]] == [lbl["label"] for lbl in y["labels"]]
        for p, q in zip(x["labels"], y["labels"], strict=True):
            assert abs(p["score"] - q["score"]) <= 1e-5


def test_frontends_serve_tasks_models_and_errors(classification_proc: Proc, split: Proc) -> None:
    for path in ("/v1/classify/tasks", "/v1/models"):
        a = httpx.get(classification_proc.url + path, timeout=10).json()
        b = httpx.get(split.url + path, timeout=10).json()
        if path == "/v1/models":
            a, b = (
                [{**c, "created": 0} for c in a["data"]],
                [{**c, "created": 0} for c in b["data"]],
            )
        assert a == b
    # The worker's backend refuses an unknown task: its 400 comes back unchanged.
    assert_openai_error(
        httpx.post(split.url + "/v1/classify", json={"input": "x", "task": "horoscope"}), 400
    )
    # The front-end's own checks: duplicate labels, too many inputs.
    dup = {"input": "x", "labels": ["a", "A"]}
    assert_openai_error(httpx.post(split.url + "/v1/classify", json=dup), 400)
    many = {"input": ["x"] * 65, "task": "sentiment"}
    assert_openai_error(httpx.post(split.url + "/v1/classify", json=many), 400)
    tok = httpx.post(split.url + "/tokenize", json={"prompt": "hello"}, timeout=10)
    assert (
        tok.status_code == 200
        and tok.json()
        == httpx.post(classification_proc.url + "/tokenize", json={"prompt": "hello"}).json()
    )
