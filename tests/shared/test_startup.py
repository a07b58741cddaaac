"""Process start-up: bad settings fail naming the variable; /ready is 503 until loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support.procs import ROOT, start_service, wait_port, wait_until_ready


def test_bad_setting_fails_at_startup_naming_the_variable() -> None:
    env = {**os.environ, "MODELFLEET_EMBEDDING_MAX_BATCH_SIZE": "lots",
           "MODELFLEET_EMBEDDING_DEVICE": "tpu"}  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "services.embedding"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "MODELFLEET_EMBEDDING_MAX_BATCH_SIZE='lots'" in r.stderr
    assert "MODELFLEET_EMBEDDING_DEVICE='tpu'" in r.stderr


def test_ready_is_503_while_the_model_loads_and_health_is_live() -> None:
    proc = start_service("embedding", wait_ready=False)
    try:
        wait_port(proc.port, timeout=60)
        ready = httpx.get(f"{proc.url}/ready")
        assert httpx.get(f"{proc.url}/health").status_code == 200
        if ready.status_code == 503:  # the usual case: loading takes seconds
            assert ready.json()["error"]["code"] == "model_not_ready"
            blocked = httpx.post(f"{proc.url}/v1/embeddings", json={"input": "x"})
            assert blocked.status_code in (200, 503)
        wait_until_ready(proc)
        assert httpx.post(f"{proc.url}/v1/embeddings", json={"input": "x"}).status_code == 200
    finally:
        proc.stop()


def test_missing_model_directory_exits_nonzero() -> None:
    env = {**os.environ, "MODELFLEET_EMBEDDING_MODEL": "/nonexistent/model"}
    r = subprocess.run([sys.executable, "-m", "services.embedding"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0
    assert "/nonexistent/model" in r.stderr
