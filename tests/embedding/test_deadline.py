"""A request whose batches overrun its deadline gets 504 near the deadline, not after the work."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc, service

DEADLINE_S = 0.5


@pytest.fixture(scope="module")
def slow_batches() -> Iterator[Proc]:
    # One batch of 32 long inputs on one thread: seconds of work, far past the deadline. One
    # batch, so it is the running pass that overruns (not items expiring in the queue).
    env = {
        "REQUEST_TIMEOUT_S": str(DEADLINE_S),
        "MAX_BATCH_SIZE": "32",
        "MAX_WAIT_MS": "50",
        "MAX_INPUT_ITEMS": "32",
        "FORWARD_WORKERS": "1",
        "TORCH_THREADS": "1",
    }
    with service("embedding", env) as proc:
        yield proc


def test_a_batch_past_its_deadline_answers_504_near_the_deadline(slow_batches: Proc) -> None:
    words = " ".join(f"word{i}" for i in range(300))  # truncated to the model's 256 tokens
    body = {"input": [f"{i} {words}" for i in range(32)]}
    t0 = time.monotonic()
    r = httpx.post(slow_batches.url + "/v1/embeddings", json=body, timeout=60)
    elapsed = time.monotonic() - t0
    err = assert_openai_error(r, 504)
    assert "deadline" in str(err["message"])
    # Near the deadline: the rest of the work (many seconds) is not waited for.
    assert elapsed < DEADLINE_S + 2.0, elapsed
    # The event loop stayed free while the forward pass ran in its thread.
    assert httpx.get(slow_batches.url + "/health", timeout=5).status_code == 200
