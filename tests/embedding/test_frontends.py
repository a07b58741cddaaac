"""``FRONTENDS=N``: one model worker and N HTTP front-ends, against real processes.

The same answers as one process; every request keeps its deadline; a full queue is 429; a dead
worker fails requests at once with 503 and un-readies the service until the supervisor's new
worker has loaded, and then it serves again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import assert_openai_error, post_both
from tests.support.procs import Proc, service, start_service, wait_until

LONG = " ".join(f"word{i}" for i in range(300))  # truncated to the model's 256 tokens
# One pass of long inputs on one thread: slow enough to time deadlines and queues against.
SLOW = {"TORCH_THREADS": "1", "FORWARD_WORKERS": "1", "MAX_WAIT_MS": "5"}


def metric(proc: Proc, name: str, route: str | None = None) -> float:
    """A series summed over its labels (optionally one route's), from the service's /metrics."""
    total = 0.0
    for line in httpx.get(proc.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and (route is None or f'route="{route}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def started_pids(proc: Proc, child: str) -> list[int]:
    """Pids the supervisor logged starting ``child`` (model-worker, frontend-<i>), in order."""
    pids = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"process started"' in line:
            entry = json.loads(line)
            if entry.get("child") == child:
                pids.append(int(entry["pid"]))
    return pids


@pytest.fixture(scope="module")
def single() -> Iterator[Proc]:
    with service("embedding", {"MAX_INPUT_ITEMS": "64"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def split() -> Iterator[Proc]:
    with service("embedding", {"FRONTENDS": "2", "MAX_INPUT_ITEMS": "64"}) as proc:
        yield proc


BODIES = [
    {"input": "a single sentence"},
    {"input": ["short", "a somewhat longer sentence about the weather", f"cut {LONG}"]},
    {"input": [[101, 7592, 2088, 102], [101, 2088, 102]]},
    {"input": "dimensions cut and renormalised", "dimensions": 64},
    {"input": ["base64 please"], "encoding_format": "base64"},
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_two_frontends_answer_as_one_process(single: Proc, split: Proc, body: object) -> None:
    ja, jb = post_both(single, split, "/v1/embeddings", body)
    for x, y in zip(ja["data"], jb["data"], strict=True):
        assert x.get("truncated") == y.get("truncated")
        ex, ey = x["embedding"], y["embedding"]
        if isinstance(ex, str):
            assert ex == ey or np.allclose(
                np.frombuffer(__import__("base64").b64decode(ex), "<f4"),
                np.frombuffer(__import__("base64").b64decode(ey), "<f4"),
                atol=1e-6,
            )
        else:
            assert np.abs(np.array(ex) - np.array(ey)).max() <= 1e-6


def test_frontends_validate_and_serve_the_rest_of_the_api(single: Proc, split: Proc) -> None:
    bad = {"input": [[10**9]]}  # a token id outside the vocabulary: the front-end's 400
    assert_openai_error(httpx.post(split.url + "/v1/embeddings", json=bad, timeout=10), 400)
    too_many = {"input": ["x"] * 65}
    assert_openai_error(httpx.post(split.url + "/v1/embeddings", json=too_many, timeout=10), 400)
    for path, body in [
        ("/tokenize", {"prompt": "hello there"}),
        ("/v1/similarity", {"query": "cats", "documents": ["a cat", "stock prices"]}),
        ("/v1/rerank", {"query": "cats", "documents": ["a cat", "stock prices"]}),
    ]:
        a = httpx.post(single.url + path, json=body, timeout=10).json()
        b = httpx.post(split.url + path, json=body, timeout=10).json()
        assert json.dumps(a, sort_keys=True)[:200] == json.dumps(b, sort_keys=True)[:200]
    models = httpx.get(split.url + "/v1/models", timeout=5).json()["data"]
    assert models[0]["ready"] is True
    assert (
        models[0]["revision"] == httpx.get(single.url + "/v1/models").json()["data"][0]["revision"]
    )


def test_metrics_count_every_frontend_in_every_scrape(split: Proc) -> None:
    before = metric(split, "modelfleet_requests_total", "/v1/embeddings")
    for i in range(20):  # a new connection each: the kernel spreads them over the front-ends
        httpx.post(split.url + "/v1/embeddings", json={"input": f"n{i}"}, timeout=10)
    for _ in range(4):  # whichever front-end answers the scrape, it reports all 20
        assert metric(split, "modelfleet_requests_total", "/v1/embeddings") - before == 20
    assert metric(split, "modelfleet_batch_size_count") >= 1  # the worker's series too


def test_a_request_past_its_deadline_is_504_and_its_queued_work_dropped() -> None:
    env = {**SLOW, "FRONTENDS": "2", "REQUEST_TIMEOUT_S": "0.5", "MAX_BATCH_SIZE": "16",
           "MAX_INPUT_ITEMS": "64"}  # fmt: skip
    with service("embedding", env) as proc:
        batches = metric(proc, "modelfleet_batch_size_sum")
        t0 = time.monotonic()
        body = {"input": [f"{i} {LONG}" for i in range(64)]}  # four slow passes
        r = httpx.post(proc.url + "/v1/embeddings", json=body, timeout=60)
        elapsed = time.monotonic() - t0
        assert "deadline" in str(assert_openai_error(r, 504)["message"])
        assert elapsed < 0.5 + 2.0, elapsed
        wait_until(lambda: metric(proc, "modelfleet_queue_depth") == 0, 30, what="queue drained")
        # The pass running at the deadline finishes; the passes still queued never run.
        wait_until(lambda: metric(proc, "modelfleet_requests_in_flight") == 0, 30, what="idle")
        assert metric(proc, "modelfleet_batch_size_sum") - batches < 64


def test_a_full_queue_answers_429_with_retry_after() -> None:
    env = {**SLOW, "FRONTENDS": "2", "MAX_BATCH_SIZE": "4", "MAX_QUEUE": "40",
           "MAX_INPUT_ITEMS": "32"}  # fmt: skip
    with service("embedding", env) as proc:
        slow = {"input": [f"{i} {LONG}" for i in range(32)]}
        worker = threading.Thread(
            target=httpx.post, args=(proc.url + "/v1/embeddings",), kwargs={"json": slow,
                                                                               "timeout": 60}
        )  # fmt: skip
        worker.start()
        wait_until(
            lambda: metric(proc, "modelfleet_queue_depth") > 20, 30, what="the slow request queued"
        )
        r = httpx.post(proc.url + "/v1/embeddings", json={"input": ["x"] * 20}, timeout=10)
        assert_openai_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        worker.join(60)


def test_a_killed_worker_fails_requests_fast_then_is_replaced() -> None:
    env = {**SLOW, "FRONTENDS": "2", "MAX_BATCH_SIZE": "32", "MAX_INPUT_ITEMS": "32"}
    with service("embedding", env) as proc:
        url = proc.url + "/v1/embeddings"
        expected = httpx.post(url, json={"input": "after the restart"}, timeout=10).json()
        answers: list[tuple[int, float]] = []

        def in_flight() -> None:
            t0 = time.monotonic()
            r = httpx.post(url, json={"input": [f"{i} {LONG}" for i in range(32)]}, timeout=60)
            answers.append((r.status_code, time.monotonic() - t0))

        thread = threading.Thread(target=in_flight)
        thread.start()
        wait_until(lambda: metric(proc, "modelfleet_requests_in_flight", "/v1/embeddings") > 0,
                   30, what="the slow request in flight")  # fmt: skip
        (worker,) = started_pids(proc, "model-worker")
        killed = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        thread.join(30)
        # The request the worker was running fails at once rather than waiting for its deadline.
        assert answers and answers[0][0] == 503, answers
        assert time.monotonic() - killed < 3.0
        wait_until(
            lambda: httpx.get(proc.url + "/ready", timeout=2).status_code == 503, 30, what="unready"
        )
        t0 = time.monotonic()
        assert_openai_error(httpx.post(url, json={"input": "x"}, timeout=10), 503)
        assert time.monotonic() - t0 < 1.0
        # The supervisor has started a new worker; once loaded, the service serves again.
        wait_until(
            lambda: len(started_pids(proc, "model-worker")) == 2, 10, what="worker restarted"
        )
        wait_until(
            lambda: httpx.get(proc.url + "/ready", timeout=2).status_code == 200, 120, what="ready"
        )
        again = httpx.post(url, json={"input": "after the restart"}, timeout=10).json()
        assert np.allclose(again["data"][0]["embedding"], expected["data"][0]["embedding"],
                           atol=1e-6)  # fmt: skip
        assert proc.alive()


def test_a_model_that_cannot_load_stops_the_service() -> None:
    # As a single process would: exit (the pod restarts), not restart the worker forever.
    proc = start_service("embedding", {"FRONTENDS": "2", "MODEL": "/nonexistent/model"},
                         wait_ready=False)  # fmt: skip
    try:
        wait_until(lambda: not proc.alive(), 60, what="the service exited")
        assert proc.popen.returncode != 0
    finally:
        proc.stop()
