"""Session-wide fixtures: one real process per model service, started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.procs import Proc, start_redis, start_service


@pytest.fixture(scope="session")
def embedding_proc() -> Iterator[Proc]:
    proc = start_service("embedding", {"MAX_BATCH_SIZE": "32", "MAX_INPUT_ITEMS": "64"})
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def classification_proc() -> Iterator[Proc]:
    proc = start_service("classification", {"MAX_INPUT_ITEMS": "64"})
    yield proc
    proc.stop()


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
