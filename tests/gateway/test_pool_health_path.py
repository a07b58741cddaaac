"""A pool whose replicas have no /ready (a vLLM server answers /health) is healthy with its
pool's HEALTH_PATH, and only then (the chart sets it for vLLM pools)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import Proc, free_port, start_service, wait_port


@pytest.fixture
def health_only_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server with vLLM's GET routes /health and /v1/models, and no /ready."""
    (tmp_path / "health").write_text("")
    (tmp_path / "v1").mkdir()
    models = {"object": "list", "data": [{"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model"}]}
    (tmp_path / "v1" / "models").write_text(json.dumps(models))
    port = free_port()
    popen = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        popen.terminate()
        popen.wait(10)


def _gateway(url: str, health_path: str | None) -> Proc:
    env = {"DISCOVERY": "static", "REDIS_URL": "", "EMBEDDING__URLS": url, "LLM__URLS": "",
           "CLASSIFICATION__URLS": "", "GENERATION__URLS": "",
           "HEALTH_INTERVAL_S": "0.2"}  # fmt: skip
    if health_path:
        env["EMBEDDING__HEALTH_PATH"] = health_path
    proc = start_service("gateway", env, wait_ready=False)
    wait_port(proc.port, 60)
    # /health answers once the lifespan (first health round included) is done.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{proc.url}/health", timeout=1).status_code == 200:
                break
        time.sleep(0.1)
    return proc


def _ready_within(proc: Proc, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{proc.url}/ready", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def test_health_path_decides_the_pools_health(health_only_server: str) -> None:
    gateway = _gateway(health_only_server, "/health")
    try:
        assert _ready_within(gateway, 30), gateway.log()
    finally:
        gateway.stop()
    # The default /ready is a 404 on such a server: the pool never turns healthy.
    gateway = _gateway(health_only_server, None)
    try:
        assert not _ready_within(gateway, 3)
        fleet = httpx.get(f"{gateway.url}/v1/fleet", timeout=5).json()
        assert "/ready answered 404" in json.dumps(fleet)
    finally:
        gateway.stop()
