"""Backends that stall, answer 500, or answer garbage.

Documented behaviour (README, "Chaos tier"):
- a replica that stalls: the request gets a 504 when REQUEST_TIMEOUT_S passes, never later, and
  after CIRCUIT_FAILURE_THRESHOLD such timeouts the replica's circuit opens;
- a replica that answers 500: the 500 reaches the client OpenAI-shaped, and counts against the
  replica's circuit, so a replica that fails everything stops getting traffic; a client that
  retries 5xx (as the OpenAI SDKs do) loses nothing;
- a replica that answers bytes that are not an HTTP response: the request is retried on another
  replica (the client sees a 200), and the replica's circuit opens.
"""

from __future__ import annotations

import time

import httpx

from tests.chaos.netfaults import garbage_backend
from tests.conftest import assert_openai_error
from tests.gateway.conftest import fake_stats, gateway
from tests.gateway.fakes import fake
from tests.support.procs import Proc

NO_CACHE = {"Cache-Control": "no-cache, no-store"}


def replica_state(gw: Proc, pool: str, url: str) -> dict[str, object]:
    pools = httpx.get(gw.url + "/v1/fleet", timeout=5).json()["pools"]
    return next(r for r in pools[pool]["replicas"] if r["url"] == url)


def test_a_stalled_backend_gets_a_504_at_the_deadline_and_its_circuit_opens() -> None:
    env = {"REQUEST_TIMEOUT_S": "1", "CIRCUIT_FAILURE_THRESHOLD": "2", "CIRCUIT_OPEN_S": "30"}
    with fake("hang") as hang, gateway({"embedding": hang.url}, None, env) as gw:
        for i in range(2):
            t0 = time.monotonic()
            r = httpx.post(gw.url + "/v1/embeddings", json={"input": f"x{i}"}, timeout=10)
            assert_openai_error(r, 504)
            assert time.monotonic() - t0 < 2.5
        assert replica_state(gw, "embedding", hang.url)["circuit"] == "open"
        # With the circuit open the request is refused at once instead of waiting again.
        t0 = time.monotonic()
        r = httpx.post(gw.url + "/v1/embeddings", json={"input": "x3"}, timeout=10)
        assert_openai_error(r, 503)
        assert time.monotonic() - t0 < 0.5


def test_a_replica_answering_500_is_ejected_and_retrying_clients_lose_nothing(
    embedding_proc: Proc,
) -> None:
    env = {"CIRCUIT_FAILURE_THRESHOLD": "3", "CIRCUIT_OPEN_S": "30"}
    with (
        fake("status", status=500) as bad,
        gateway({"embedding": [embedding_proc.url, bad.url]}, None, env) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as c,
    ):
        server_errors = 0
        for i in range(30):
            for _attempt in range(3):  # what the OpenAI SDKs do with a 5xx
                r = c.post("/v1/embeddings", json={"input": f"t{i}"}, headers=NO_CACHE)
                if r.status_code < 500:
                    break
                assert_openai_error(r, 500)
                server_errors += 1
            assert r.status_code == 200, r.text
        assert 1 <= server_errors <= 3
        assert fake_stats(bad)["posts"] == server_errors
        assert replica_state(gw, "embedding", bad.url)["circuit"] == "open"


def test_garbage_from_a_replica_is_retried_elsewhere_and_ejects_it(embedding_proc: Proc) -> None:
    env = {"CIRCUIT_FAILURE_THRESHOLD": "2", "CIRCUIT_OPEN_S": "30"}
    with (
        garbage_backend(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff garbage\r\n\r\n") as junk,
        gateway({"embedding": [embedding_proc.url, junk.url]}, None, env) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as c,
    ):
        deadline = time.monotonic() + 10
        while not replica_state(gw, "embedding", junk.url)["healthy"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(20):
            r = c.post("/v1/embeddings", json={"input": f"g{i}"}, headers=NO_CACHE)
            assert r.status_code == 200, r.text
        assert 1 <= junk.posts <= 2
        assert replica_state(gw, "embedding", junk.url)["circuit"] == "open"
