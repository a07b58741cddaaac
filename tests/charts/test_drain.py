"""Draining, as the chart sets it up: SIGTERM during a long request lets the request finish.

The kubelet sends SIGTERM after the preStop pause; each process then has SHUTDOWN_GRACE_S (the
chart's drain.requestDeadlineSeconds) for what is in flight. Real processes: an llm service
and a gateway in front of it, each started with the drain the chart renders for it, each sent
SIGTERM while a generation of a few seconds is running through it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.charts.contract import processes
from tests.charts.helm import render
from tests.support.procs import Proc, start_service

# Long enough to be mid-flight when SIGTERM lands (asserted by timestamps below), short
# enough for the default tier even on a loaded machine.
LONG = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 24,
        "temperature": 0, "ignore_eos": True}  # fmt: skip


def _rendered_drain(service: str) -> str:
    """SHUTDOWN_GRACE_S exactly as the chart renders it (values.yaml defaults)."""
    proc = next(p for p in processes(render()) if p.name == service)
    return proc.env[f"MODELFLEET_{service.upper()}_SHUTDOWN_GRACE_S"]


@pytest.fixture
def llm() -> Iterator[Proc]:
    proc = start_service(
        "llm",
        {"MAX_BATCH_SIZE": "2", "MAX_TOKENS_CAP": "512", "CONTEXT_WINDOW": "1024",
         "SHUTDOWN_GRACE_S": _rendered_drain("llm")},
    )  # fmt: skip
    yield proc
    proc.stop()


def _running(llm: Proc) -> bool:
    text = httpx.get(f"{llm.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("modelfleet_sequences_running{") and float(line.split()[-1]) >= 1:
            return True
    return False


def _sigterm_mid_request(url: str, llm: Proc, target: Proc, headers: dict[str, str]) -> Any:
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["resp"] = httpx.post(url, json=LONG, headers=headers, timeout=300)
        except httpx.HTTPError as exc:
            result["error"] = exc
        result["done"] = time.monotonic()

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 60
    while not _running(llm):
        assert time.monotonic() < deadline, "the request never reached the model"
        time.sleep(0.05)
    target.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    thread.join(310)
    assert "error" not in result, f"request cut by SIGTERM: {result.get('error')!r}"
    # Not vacuous: the answer came after the signal, so the request was in flight across it.
    assert result["done"] > signalled
    return result["resp"]


def test_sigterm_on_a_service_finishes_the_request_in_flight(llm: Proc) -> None:
    resp = _sigterm_mid_request(f"{llm.url}/v1/chat/completions", llm, llm, {})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == LONG["max_tokens"]
    assert body["choices"][0]["finish_reason"] == "length"
    # It exits once the request is done (not at SIGKILL time); uvicorn re-raises the SIGTERM
    # it handled, so the exit status is "terminated by SIGTERM", as Kubernetes expects.
    assert llm.popen.wait(30) in (0, -signal.SIGTERM)


def test_sigterm_on_the_gateway_finishes_the_request_in_flight(llm: Proc) -> None:
    gateway = start_service(
        "gateway",
        {"DISCOVERY": "static", "REDIS_URL": "", "LLM__URLS": llm.url, "EMBEDDING__URLS": "",
         "CLASSIFICATION__URLS": "", "GENERATION__URLS": "",
         "SHUTDOWN_GRACE_S": _rendered_drain("gateway")},
    )  # fmt: skip
    try:
        resp = _sigterm_mid_request(f"{gateway.url}/v1/chat/completions", llm, gateway, {})
        assert resp.status_code == 200, resp.text
        assert resp.json()["usage"]["completion_tokens"] == LONG["max_tokens"]
        assert gateway.popen.wait(30) in (0, -signal.SIGTERM)
    finally:
        gateway.stop()
