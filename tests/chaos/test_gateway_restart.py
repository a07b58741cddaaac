"""A gateway restarted under load.

Documented behaviour (README, "Chaos tier"): on SIGTERM the gateway stops accepting
connections and finishes the requests it has (SHUTDOWN_GRACE_S); while no gateway listens, a
client gets a connection error, which it can retry. So a client that retries connection errors
and 503s loses no request across a restart: every request ends in a 200, and no request fails
in a way it could not retry (a 5xx other than 503, a response cut off half-way).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tests.gateway.conftest import start_gateway
from tests.support.procs import Proc, free_port

CLIENTS = 4
RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def test_a_gateway_restarted_under_load_loses_no_retryable_request(
    embedding_proc: Proc, redis_proc: Proc
) -> None:
    port = free_port()
    pools = {"embedding": embedding_proc.url}
    gw = start_gateway(pools, redis_proc, port=port)
    stop = threading.Event()
    done: list[int] = []
    retried: list[str] = []
    lost: list[str] = []

    def client(i: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"input": f"restart {i} {n} {time.time()}"}
                deadline = time.monotonic() + 60
                while True:
                    try:
                        r = c.post("/v1/embeddings", json=body)
                    except RETRYABLE as exc:
                        retried.append(type(exc).__name__)
                    except httpx.HTTPError as exc:
                        lost.append(repr(exc))
                        break
                    else:
                        if r.status_code == 200:
                            done.append(i)
                            break
                        if r.status_code != 503:
                            lost.append(f"{r.status_code} {r.text[:200]}")
                            break
                        retried.append("503")
                    if time.monotonic() > deadline:
                        lost.append("gave up after 60 s of retries")
                        break
                    time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: len(done) >= 10)
        gw.stop()  # SIGTERM, graceful
        before = len(done)
        gw = start_gateway(pools, redis_proc, port=port)
        _wait_for(lambda: len(done) >= before + 10)
    finally:
        stop.set()
        for t in threads:
            t.join(90)
        gw.stop()
    assert not lost, lost[:5]
    assert retried, "the restart never hit a request: nothing was tested"


def _wait_for(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.05)
