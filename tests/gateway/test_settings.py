from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.routing import RoutingStrategy
from services.gateway.settings import GatewaySettings

STRONG = "sk-live-0123456789abcdef"


def test_defaults_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_GATEWAY_EMBEDDING__URLS", "http://a:3003/, http://b:3003,,")
    monkeypatch.setenv("MODELFLEET_GATEWAY_LLM__URLS", "")
    monkeypatch.setenv("MODELFLEET_GATEWAY_GENERATION__SERVICE", "gen")
    monkeypatch.setenv("MODELFLEET_GATEWAY_API_KEYS", "k1,k2")
    monkeypatch.setenv("MODELFLEET_GATEWAY_ROUTING", "least_in_flight")
    s = GatewaySettings()
    assert s.port == 8080
    assert s.embedding.urls == ("http://a:3003", "http://b:3003")
    assert s.llm.urls == ()
    # One field of a pool set by env: the pool's other field keeps its default.
    assert s.generation.urls == ("http://127.0.0.1:3005",)
    assert s.generation.service == "gen"
    assert s.llm.service == "llm"
    assert s.api_keys == ("k1", "k2")
    assert s.routing is RoutingStrategy.LEAST_IN_FLIGHT


def test_urls_must_be_http() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        GatewaySettings(llm={"urls": "llm:3002"})


@pytest.mark.parametrize("keys", ["", "changeme", "short-key"])
def test_production_refuses_missing_placeholder_or_short_keys(keys: str) -> None:
    with pytest.raises(ValidationError, match="API key"):
        GatewaySettings(environment="production", api_keys=keys)


def test_production_takes_keys_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"{STRONG}\n")
    s = GatewaySettings(environment="production", api_keys_file=f)
    assert s.all_api_keys() == {STRONG}
    with pytest.raises(ValidationError, match="cannot read"):
        GatewaySettings(environment="production", api_keys_file=tmp_path / "missing")


def test_production_refuses_a_placeholder_redis_password() -> None:
    with pytest.raises(ValidationError, match="Redis password"):
        GatewaySettings(
            environment="production", api_keys=STRONG, redis_url="redis://:changeme@redis:6379/0"
        )
    GatewaySettings(environment="production", api_keys=STRONG, redis_url="redis://r:6379/0")


def test_development_stays_open() -> None:
    assert GatewaySettings(api_keys="").all_api_keys() == frozenset()
