"""``make run`` waits on the gateway's own view of its pools, read from a real gateway."""

from __future__ import annotations

import time

from services.localfleet import _pools_unhealthy
from tests.gateway.conftest import gateway
from tests.support.procs import Proc, free_port


def test_make_run_waits_until_every_pool_has_a_healthy_replica(embedding_proc: Proc) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pools = {"embedding": embedding_proc.url, "classification": dead, "llm": dead,
             "generation": dead}  # fmt: skip
    with gateway(pools) as gw:
        deadline = time.monotonic() + 10
        while (bad := _pools_unhealthy(gw.port)) != ["classification", "generation", "llm"]:
            assert time.monotonic() < deadline, bad
            time.sleep(0.1)
    assert _pools_unhealthy(free_port()) == ["gateway"]  # no gateway: keep waiting


def test_a_gateway_with_api_keys_is_not_waited_on(embedding_proc: Proc) -> None:
    with gateway({"embedding": embedding_proc.url}, env={"API_KEYS": "k1"}) as gw:
        assert _pools_unhealthy(gw.port) == []
