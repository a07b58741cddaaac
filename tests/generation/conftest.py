"""One generation process for the module tests (small summary chunks to exercise map-reduce)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import Proc, start_service

GENERATION_ENV = {
    "MAX_BATCH_SIZE": "8",
    "CONTEXT_WINDOW": "2048",
    "DEFAULT_MAX_TOKENS": "32",
    "SUMMARY_CHUNK_TOKENS": "160",
    "SUMMARY_MAP_TOKENS": "40",
}


@pytest.fixture(scope="session")
def generation_proc() -> Iterator[Proc]:
    proc = start_service("generation", GENERATION_ENV, timeout=300)
    yield proc
    proc.stop()
