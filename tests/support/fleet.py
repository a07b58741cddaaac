"""A whole fleet on free ports: a private Redis, the four model services and one gateway.

Used by the soak (``make soak``), the fleet report (``make bench-fleet``) and the chaos tier.
Nothing here touches a fleet started by ``make run``: every port is a fresh free one and every
process is stopped by :meth:`Fleet.stop`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from tests.gateway.conftest import start_gateway
from tests.support.procs import Proc, start_redis, start_service, wait_until_ready

# Small decode budgets: the soak and the report measure the fleet, not 256-token stories.
SERVICE_ENV: dict[str, dict[str, str]] = {
    "embedding": {"MAX_BATCH_SIZE": "32"},
    "classification": {},
    "llm": {"DEFAULT_MAX_TOKENS": "16", "MAX_TOKENS_CAP": "64", "CONTEXT_WINDOW": "1024"},
    "generation": {"DEFAULT_MAX_TOKENS": "16", "MAX_TOKENS_CAP": "64", "CONTEXT_WINDOW": "2048"},
}
SERVICES = tuple(SERVICE_ENV)


@dataclass
class Fleet:
    redis: Proc
    services: dict[str, Proc]
    gateway: Proc
    gateway_env: dict[str, str] = field(default_factory=dict)

    def procs(self) -> dict[str, Proc]:
        """Every process by name (redis, the services, the gateway)."""
        return {"redis": self.redis, **self.services, "gateway": self.gateway}

    def restart_gateway(self, env: Mapping[str, str] | None = None) -> Proc:
        self.gateway.stop()
        self.gateway = _gateway(self.services, self.redis, {**self.gateway_env, **(env or {})})
        return self.gateway

    def stop(self) -> None:
        for proc in [self.gateway, *self.services.values(), self.redis]:
            proc.stop()


def _gateway(services: Mapping[str, Proc], redis: Proc, env: Mapping[str, str]) -> Proc:
    gw = start_gateway({k: p.url for k, p in services.items()}, redis, env)
    wait_pools_healthy(gw, list(services))
    return gw


def wait_pools_healthy(gw: Proc, pools: list[str], timeout: float = 30.0) -> None:
    """Until the gateway counts a healthy replica in each of ``pools``."""
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            state = httpx.get(gw.url + "/v1/fleet", timeout=2).json()["pools"]
            if all(state[p].get("healthy") for p in pools):
                return
        if time.monotonic() > end:
            raise TimeoutError(f"gateway pools not healthy after {timeout}s:\n{gw.log()}")
        time.sleep(0.1)


def start_fleet(
    services: tuple[str, ...] = SERVICES,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
    gateway_env: Mapping[str, str] | None = None,
) -> Fleet:
    """Start Redis, ``services`` (loading in parallel) and a gateway; wait until all are ready."""
    redis = start_redis()
    started: dict[str, Proc] = {}
    try:
        for name in services:
            env = {**SERVICE_ENV[name], **(service_env or {}).get(name, {})}
            started[name] = start_service(name, env, wait_ready=False)
        for proc in started.values():
            wait_until_ready(proc, timeout=300)
        gw_env = dict(gateway_env or {})
        gw = _gateway(started, redis, gw_env)
    except BaseException:
        for proc in [*started.values(), redis]:
            proc.stop()
        raise
    return Fleet(redis, started, gw, gw_env)


@contextlib.contextmanager
def fleet(
    services: tuple[str, ...] = SERVICES,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
    gateway_env: Mapping[str, str] | None = None,
) -> Iterator[Fleet]:
    f = start_fleet(services, service_env, gateway_env)
    try:
        yield f
    finally:
        f.stop()
