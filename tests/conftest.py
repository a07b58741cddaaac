"""Session-wide fixtures: one real process per model service, started on first use and
shared by every test module that needs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelfleet.devices import reproducible_cpu_math
from tests.support.procs import Proc, start_redis, start_service

# The in-process engine tests run with the CPU math settings every service's main() sets.
reproducible_cpu_math()


def _session_service(name: str, env: dict[str, str]) -> Iterator[Proc]:
    proc = start_service(name, env, timeout=300)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def embedding_proc() -> Iterator[Proc]:
    yield from _session_service("embedding", {"MAX_BATCH_SIZE": "32", "MAX_INPUT_ITEMS": "64"})


@pytest.fixture(scope="session")
def classification_proc() -> Iterator[Proc]:
    yield from _session_service("classification", {"MAX_INPUT_ITEMS": "64"})


# Small batch and queue so the llm's limits are cheap to reach in tests.
LLM_ENV = {
    "MAX_BATCH_SIZE": "4",
    "MAX_QUEUE": "4",
    "CONTEXT_WINDOW": "1024",
    "MAX_TOKENS_CAP": "512",
    "DEFAULT_MAX_TOKENS": "32",
}
# Small summary chunks so short test inputs exercise map-reduce.
GENERATION_ENV = {
    "MAX_BATCH_SIZE": "8",
    "CONTEXT_WINDOW": "2048",
    "SUMMARY_CHUNK_TOKENS": "160",
    "SUMMARY_MAP_TOKENS": "40",
}


@pytest.fixture(scope="session")
def llm_proc() -> Iterator[Proc]:
    yield from _session_service("llm", LLM_ENV)


@pytest.fixture(scope="session")
def generation_proc() -> Iterator[Proc]:
    yield from _session_service("generation", GENERATION_ENV)


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[Proc]:
    proc = start_redis()
    yield proc
    proc.stop()


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, object]:
    """``resp`` is ``status`` with the OpenAI-shaped error body; returns the error object."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "code", "param"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


def post_both(a: Proc, b: Proc, path: str, body: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST ``body`` to two processes serving the same model; both answer 200 with the same
    usage and model. Returns both bodies for the caller to compare the rest."""
    ra = httpx.post(a.url + path, json=body, timeout=30)
    rb = httpx.post(b.url + path, json=body, timeout=30)
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    ja, jb = ra.json(), rb.json()
    assert ja["usage"] == jb["usage"] and ja["model"] == jb["model"]
    return ja, jb
