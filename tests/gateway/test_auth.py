"""API keys: /v1 needs a valid Bearer key; health, readiness and metrics stay open."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from services.gateway.auth import ApiKeys
from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.procs import Proc

KEYS = "key-alpha-0001,key-bravo-0002"


def test_key_ids_are_stable_and_do_not_reveal_the_key() -> None:
    keys = ApiKeys(["key-alpha-0001"])
    kid = keys.identify(b"Bearer key-alpha-0001")
    assert kid.startswith("key:") and "alpha" not in kid
    assert keys.identify(b"bearer  key-alpha-0001") == kid


@pytest.fixture(scope="module")
def gw(fake_openai: Proc) -> Iterator[Proc]:
    with gateway({"llm": fake_openai.url}, None, {"API_KEYS": KEYS}) as proc:
        yield proc


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer wrong-key", "invalid_api_key"),
        ("Basic a2V5LWFscGhhLTAwMDE=", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
    ],
)
def test_missing_or_wrong_key_is_a_401(gw: Proc, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.post(gw.url + "/v1/chat/completions", json={"messages": []}, headers=headers)
    err = assert_openai_error(r, 401)
    assert err["type"] == "authentication_error" and err["code"] == code
    assert_openai_error(httpx.get(gw.url + "/v1/models", headers=headers), 401)


def test_each_configured_key_works_with_the_openai_client(gw: Proc) -> None:
    for key in KEYS.split(","):
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        out = client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.choices[0].message.content
    bad = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_operational_routes_stay_open(gw: Proc) -> None:
    for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(gw.url + path).status_code == 200, path
    metrics = httpx.get(gw.url + "/metrics").text
    line = next(
        m for m in metrics.splitlines() if m.startswith('modelfleet_rate_limited_total{kind="auth"')
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
