"""Per-key limits kept in Redis: requests per minute everywhere, tokens per minute on LLM routes."""

from __future__ import annotations

import time

import httpx

from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.procs import Proc

A, B = "key-alpha-0001", "key-bravo-0002"


def fresh_window() -> None:
    """Fixed one-minute windows: don't start a test a few seconds before one rolls over."""
    into = time.time() % 60
    if into > 55:
        time.sleep(60.5 - into)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_per_minute_per_key(fake_openai: Proc, redis_proc: Proc) -> None:
    env = {"API_KEYS": f"{A},{B}", "RATE_LIMIT_RPM": "3"}
    with gateway({"generation": fake_openai.url}, redis_proc, env) as gw:
        fresh_window()
        body = {"prompt": "hi", "max_tokens": 2}
        for _ in range(3):
            assert httpx.post(gw.url + "/v1/completions", json=body, headers=auth(A)).is_success
        r = httpx.post(gw.url + "/v1/completions", json=body, headers=auth(A))
        err = assert_openai_error(r, 429)
        assert err["code"] == "rate_limit_requests"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Another key has its own window.
        assert httpx.post(gw.url + "/v1/completions", json=body, headers=auth(B)).is_success
        metrics = httpx.get(gw.url + "/metrics").text
    assert 'modelfleet_rate_limited_total{kind="requests",service="gateway"} 1.0' in metrics


def test_tokens_per_minute_count_prompt_estimate_and_completion(
    fake_openai: Proc, redis_proc: Proc
) -> None:
    env = {"API_KEYS": A, "RATE_LIMIT_TPM": "120"}
    # ~200 bytes of body: ~50 prompt tokens by the gateway's estimate, plus 3 completion tokens
    # (reserved as max_tokens, settled with the usage): two fit in 120, the third does not.
    body = {"messages": [{"role": "user", "content": "x" * 150}], "max_tokens": 3}
    with gateway({"llm": fake_openai.url}, redis_proc, env) as gw:
        fresh_window()
        codes = []
        for _ in range(4):
            r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth(A))
            # Nothing to wait for between requests: the reservation is counted before the
            # answer, and settling adds used - reserved = 3 - 3 = 0 tokens.
            codes.append(r.status_code)
        assert codes[:2] == [200, 200] and codes[-1] == 429
        assert r.json()["error"]["code"] == "rate_limit_tokens"
