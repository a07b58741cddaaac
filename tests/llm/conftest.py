"""One llm process for the module tests (small batch and queue so limits are cheap to reach)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import Proc, start_service

LLM_ENV = {
    "MAX_BATCH_SIZE": "4",
    "MAX_QUEUE": "4",
    "CONTEXT_WINDOW": "1024",
    "MAX_TOKENS_CAP": "512",
    "DEFAULT_MAX_TOKENS": "32",
}


@pytest.fixture(scope="session")
def llm_proc() -> Iterator[Proc]:
    proc = start_service("llm", LLM_ENV, timeout=300)
    yield proc
    proc.stop()
