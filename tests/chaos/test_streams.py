"""Generations interrupted: a replica killed mid-stream, a replica told to stop mid-generation.

Documented behaviour (README, "Chaos tier"):
- a replica killed while it streams: the client's stream ends cleanly within seconds, with an
  OpenAI-shaped error event and ``data: [DONE]`` (never a hang or a torn connection), and the
  replica's circuit counts the failure;
- SIGTERM to a service during a long generation: the service finishes the generation in
  flight (within SHUTDOWN_GRACE_S, default 30 s), then exits 0.

"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.gateway.conftest import gateway
from tests.support.procs import Proc, start_service

CHAT = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]
LLM_ENV = {"CONTEXT_WINDOW": "1024", "MAX_TOKENS_CAP": "512", "MAX_BATCH_SIZE": "4"}


@pytest.fixture
def llm_victim() -> Iterator[Proc]:
    """An llm replica of this test's own, free to kill."""
    proc = start_service("llm", LLM_ENV, timeout=300)
    yield proc
    proc.stop()


def data_events(lines: list[str]) -> list[str]:
    return [line[6:] for line in lines if line.startswith("data: ")]


def test_a_replica_killed_mid_stream_ends_the_stream_with_an_error_event(
    llm_victim: Proc,
) -> None:
    body = {"messages": CHAT, "stream": True, "max_tokens": 400, "ignore_eos": True}
    lines: list[str] = []
    with gateway({"llm": llm_victim.url}) as gw:
        t0 = time.monotonic()
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
                if len(data_events(lines)) == 3:
                    llm_victim.kill()
                    killed = time.monotonic()
        ended = time.monotonic()
        state = httpx.get(gw.url + "/v1/fleet").json()["pools"]["llm"]["replicas"][0]
    events = data_events(lines)
    assert ended - killed < 5, "the stream hung after its replica died"
    assert all("choices" in orjson.loads(e) for e in events[:3])
    err = orjson.loads(events[-2])["error"]
    assert set(err) == {"message", "type", "code", "param"} and "retry" in err["message"]
    assert events[-1] == "[DONE]"
    assert ended - t0 < 60
    assert state["consecutive_failures"] >= 1 or not state["healthy"]


def test_sigterm_during_a_long_generation_lets_it_finish() -> None:
    # A grace period well above what 6 tokens take even on a crowded 2-core machine: the test
    # is about the request finishing, not about this machine's speed.
    llm_victim = start_service("llm", {**LLM_ENV, "SHUTDOWN_GRACE_S": "300"}, timeout=300)
    try:
        _sigterm_mid_generation(llm_victim)
    finally:
        llm_victim.stop()


def _sigterm_mid_generation(llm_victim: Proc) -> None:
    body = {"messages": CHAT, "stream": True, "max_tokens": 6, "ignore_eos": True}
    lines: list[str] = []
    url = llm_victim.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=330) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(data_events(lines)) == 1:
                llm_victim.popen.send_signal(signal.SIGTERM)
                termed = time.monotonic()
    finished = time.monotonic()
    events = data_events(lines)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert finished - termed < 300  # the grace period
    # uvicorn re-raises the captured SIGTERM once its shutdown is complete, so a clean exit is
    # 0 or -SIGTERM; "Finished server process" in the log says the shutdown ran to its end.
    assert llm_victim.popen.wait(30) in (0, -signal.SIGTERM)
    assert "Finished server process" in llm_victim.log()
