"""The security review's findings on identity and configuration (issue 15), each against real
processes: keys, tenant-scoped cache, proxies, limits, request ids, CORS, docs, fail modes.

Request bounds are in test_request_bounds.py; upstream protocol faults a real service cannot
produce on demand are in test_h1_security.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import httpx
import pytest
import redis

from services.gateway.auth import ApiKeys
from services.gateway.ratelimit import WINDOW_S
from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.procs import Proc, wait_until

KEY_A, KEY_B = "key-alpha-0001", "key-bravo-0002"
CHAT = [{"role": "user", "content": "Name a colour."}]


# -- finding 7: the cache is per tenant --------------------------------------------------------
def test_one_key_never_gets_another_keys_cached_answer(llm_proc: Proc, redis_proc: Proc) -> None:
    env = {"API_KEYS": f"{KEY_A},{KEY_B}"}
    with gateway({"llm": llm_proc.url}, redis_proc, env) as gw:
        body = {
            "messages": [{"role": "user", "content": f"tenant test {time.time()}"}],
            "max_tokens": 4,
            "temperature": 0,
        }

        def post(key: str) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"}
            return httpx.post(
                f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=60
            )

        a1, a2, b1 = post(KEY_A), post(KEY_A), post(KEY_B)
        assert a1.headers["x-cache"] == "miss"
        assert a2.headers["x-cache"] == "hit"  # the same tenant shares its own cache
        assert b1.headers["x-cache"] == "miss"  # another tenant does not
        # A hit is a new answer: its own id, never the id of the request that filled the cache.
        assert a2.json()["id"] != a1.json()["id"]
        assert a2.json()["id"].startswith("chatcmpl-")
        assert a2.json()["choices"] == a1.json()["choices"]


# -- finding 9: secrets never in error output -------------------------------------------------


def test_a_bad_configuration_never_prints_keys_or_the_redis_password() -> None:
    key, password = "sk-live-9f8e7d6c5b4a39281706", "r3d1s-Pa55w0rd-xyz"
    env = {
        **os.environ,
        "MODELFLEET_GATEWAY_ENVIRONMENT": "production",
        "MODELFLEET_GATEWAY_API_KEYS": f"{key},short",
        "MODELFLEET_GATEWAY_REDIS_URL": f"redis://admin:{password}@redis:6379/0",
        "MODELFLEET_GATEWAY_PORT": "99999",
        "MODELFLEET_GATEWAY_LLM__URLS": f"ftp://admin:{password}@llm",
    }
    out = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "invalid configuration" in out.stderr
    assert "MODELFLEET_GATEWAY_API_KEYS" in out.stderr  # the variable is named...
    assert key not in out.stderr and password not in out.stderr  # ...its value is not
    assert key not in out.stdout and password not in out.stdout


# -- finding 8: X-Forwarded-For only from configured proxies ----------------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "trusted-proxy"])
def test_x_forwarded_for_counts_only_from_configured_proxies(
    redis_proc: Proc, trusted: bool
) -> None:
    """Per-address limits on an open gateway: a varying X-Forwarded-For must not reset them."""
    env = {"RATE_LIMIT_RPM": "2"}
    if trusted:
        env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    net = random.randrange(256)  # fresh addresses: minute windows outlive a rerun
    with gateway({}, redis_proc, env) as gw:
        statuses = []
        for i in range(4):
            r = httpx.post(
                f"{gw.url}/v1/embeddings",
                json={"input": "x"},
                headers={"x-forwarded-for": f"10.{net}.{i}.1"},
                timeout=10,
            )
            statuses.append(r.status_code)
    if trusted:
        assert 429 not in statuses, statuses  # the proxy's word: four different clients
    else:
        # One client (127.0.0.1), whatever the header says: over 2 a minute, refused.
        assert statuses[2:] == [429, 429], statuses


# -- finding 6: tokens per minute are reserved before the call ---------------------------------


def test_tokens_per_minute_reserve_max_tokens_up_front_and_settle_after(
    fake_openai: Proc, redis_proc: Proc
) -> None:
    """The fake backend reports 3 completion tokens whatever max_tokens says."""
    key = f"key-tpm-{random.randrange(1 << 30):08x}"  # a window of its own
    env = {"API_KEYS": key, "RATE_LIMIT_TPM": "200"}
    headers = {"authorization": f"Bearer {key}"}
    with gateway({"llm": fake_openai.url}, redis_proc, env) as gw:
        if time.time() % 60 > 50:  # fixed one-minute windows: not across a rollover
            time.sleep(61 - time.time() % 60)  # the wall clock's next minute: no event to await

        def chat(max_tokens: int) -> httpx.Response:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
            return httpx.post(
                f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=10
            )

        # One request may not overshoot the limit by its completion: refused up front.
        err = assert_openai_error(chat(1000), 429)
        assert err["code"] == "rate_limit_tokens" and "max_tokens" in str(err["message"])
        # ~15 prompt + 150 reserved fits; the unused 147 come back after the answer, so the
        # same request fits again (without settling, 2 x 165 > 200).
        assert chat(150).status_code == 200
        # Settled just after the answer: the window in Redis falls back from ~165 to ~18.
        wait_until(lambda: _tpm_used(redis_proc, key) < 150, what="the unused tokens back")
        assert chat(150).status_code == 200


def _tpm_used(redis_proc: Proc, key: str) -> int:
    """The tokens counted for ``key`` in this minute's window, as the gateway keeps them."""
    client_id = ApiKeys([key]).identify(f"Bearer {key}".encode())
    window = int(time.time() // WINDOW_S)
    with redis.Redis(port=redis_proc.port) as r:
        return int(r.get(f"mf:rl:{client_id}:t:{window}") or 0)


# -- finding 10: the lower ones -----------------------------------------------------------------


def test_duplicate_authorization_headers_are_a_400(fake_openai: Proc) -> None:
    with gateway({"llm": fake_openai.url}, None, {"API_KEYS": KEY_A}) as gw:
        headers = [("authorization", f"Bearer {KEY_A}"), ("authorization", "Bearer other")]
        for path, method in (("/v1/chat/completions", "POST"), ("/v1/models", "GET")):
            r = httpx.request(
                method, f"{gw.url}{path}", json={"messages": CHAT}, headers=headers, timeout=10
            )
            assert assert_openai_error(r, 400)["code"] == "duplicate_authorization"


@pytest.mark.parametrize("value", ['a"b', "a b", "x" * 129, "ünï", "<script>"])
def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(embedding_proc: Proc, value: str) -> None:
    r = httpx.get(
        f"{embedding_proc.url}/v1/models",
        headers={"x-request-id": value.encode()},
        timeout=10,
    )
    assert r.headers["x-request-id"] != value and len(r.headers["x-request-id"]) == 32


def test_a_safe_request_id_is_kept(embedding_proc: Proc) -> None:
    rid = "trace-01.AB:cd_9"
    r = httpx.get(f"{embedding_proc.url}/v1/models", headers={"x-request-id": rid}, timeout=10)
    assert r.headers["x-request-id"] == rid


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/x-www-form-urlencoded", "origin": "https://evil.example"},
    ],
    ids=["text-plain", "multipart", "browser-form"],
)
def test_bodies_a_browser_may_post_cross_origin_are_refused_with_415(
    embedding_proc: Proc, headers: dict[str, str]
) -> None:
    body = b'{"input": "a web page made a browser send this"}'
    with gateway({"embedding": embedding_proc.url}) as gw:
        for url in (embedding_proc.url, gw.url):
            r = httpx.post(f"{url}/v1/embeddings", content=body, headers=headers, timeout=10)
            assert assert_openai_error(r, 415)["code"] == "unsupported_media_type"


def test_docs_and_openapi_are_off_in_production(fake_openai: Proc) -> None:
    env = {"ENVIRONMENT": "production", "API_KEYS": "k" * 32}
    with gateway({"llm": fake_openai.url}, None, env) as gw:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(f"{gw.url}{path}", timeout=10).status_code == 404
    with gateway({"llm": fake_openai.url}) as gw:  # development: on
        assert httpx.get(f"{gw.url}/openapi.json", timeout=10).status_code == 200


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_rate_limits_while_redis_is_down_follow_the_fail_mode(mode: str) -> None:
    """Redis at a port nothing listens on: the limiter's answer is RATE_LIMIT_FAIL_MODE's."""
    from tests.support.procs import free_port

    env = {
        "RATE_LIMIT_RPM": "2",
        "RATE_LIMIT_FAIL_MODE": mode,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    with gateway({}, None, env) as gw:
        answers = [
            httpx.post(f"{gw.url}/v1/embeddings", json={"input": "x"}, timeout=10) for _ in range(3)
        ]
    statuses = [r.status_code for r in answers]
    limiter_refused = ["rate limits are unavailable" in r.text for r in answers]
    # No embedding replica: an admitted request is a 503 from the empty pool.
    if mode == "open":
        assert statuses == [503, 503, 503] and not any(limiter_refused)
    elif mode == "closed":
        assert statuses == [503, 503, 503] and all(limiter_refused)
    else:
        assert statuses == [503, 503, 429] and not any(limiter_refused)


def test_metrics_on_their_own_port(fake_openai: Proc) -> None:
    """METRICS_PORT: /metrics there and only there (the API port answers 404)."""
    from tests.support.procs import free_port

    port = free_port()
    with gateway({"llm": fake_openai.url}, None, {"METRICS_PORT": str(port)}) as gw:
        assert httpx.get(f"{gw.url}/metrics", timeout=10).status_code == 404
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200 and "modelfleet_" in r.text
        # Nothing of the API there: whatever the path, the answer is the metrics text.
        api = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert "application/json" not in api.headers.get("content-type", "")
