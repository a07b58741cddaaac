"""Fixtures of the gateway tests: real backends, real Redis, real gateway processes.

Backends are started once per session (one embedding replica is the suite-wide one from
tests/conftest.py, the second is ours); gateways are cheap (about a second) and each test
module starts the ones its configuration needs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from tests.gateway.fakes import fake
from tests.support.procs import Proc, start_service, wait_until_ready

POOLS = ("llm", "embedding", "classification", "generation")
EMBEDDING_ENV = {"MAX_BATCH_SIZE": "32", "MAX_INPUT_ITEMS": "64"}
# Short intervals so health and circuit transitions happen within a test's patience.
FAST_HEALTH = {"HEALTH_INTERVAL_S": "0.3", "HEALTH_TIMEOUT_S": "0.5", "CIRCUIT_OPEN_S": "1"}


def start_gateway(
    pools: Mapping[str, str | Sequence[str]],
    redis: Proc | None = None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Proc:
    """A gateway process whose pools hold exactly ``pools`` (absent pools are empty).

    Waits for /health, not /ready: a gateway whose every pool is down is never ready.
    """
    full = {"DISCOVERY": "static", "LOG_JSON": "true", **FAST_HEALTH}
    for name in POOLS:
        urls = pools.get(name, [])
        full[f"{name.upper()}__URLS"] = urls if isinstance(urls, str) else ",".join(urls)
    full["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0" if redis else ""
    full.update(env or {})
    proc = start_service("gateway", full, wait_ready=False, port=port)
    deadline = time.monotonic() + 60
    while True:
        if not proc.alive():
            raise RuntimeError(f"gateway exited:\n{proc.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{proc.url}/health", timeout=1).status_code == 200:
                return proc
        if time.monotonic() > deadline:
            proc.stop()
            raise TimeoutError(f"gateway not up after 60s:\n{proc.log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def gateway(
    pools: Mapping[str, str | Sequence[str]],
    redis: Proc | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Proc]:
    proc = start_gateway(pools, redis, env)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def second_embedding() -> Iterator[Proc]:
    # Not waited for here: it loads while the suite-wide replica does (see embedding_pair).
    proc = start_service("embedding", EMBEDDING_ENV, wait_ready=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def embedding_pair(second_embedding: Proc, embedding_proc: Proc) -> tuple[Proc, Proc]:
    wait_until_ready(second_embedding)
    return embedding_proc, second_embedding


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[Proc]:
    """Completions and chat, streams paced at 0.2 s a chunk."""
    with fake("openai", name="fake-decoder") as proc:
        yield proc


def backend_posts(proc: Proc, route: str) -> int:
    """Requests a real model service counted on ``route`` (its own Prometheus counter)."""
    text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("modelfleet_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def fake_stats(proc: Proc) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{proc.url}/_stats", timeout=5).json()
    return data
