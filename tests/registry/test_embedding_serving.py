"""The embedding service on a registered sentence-transformers model, following its alias."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from modelfleet.resolve import packaged_embedding_dir
from tests.support.procs import service


@pytest.mark.slow
def test_embedding_service_follows_the_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from modelfleet_toolkit import registry

    model = tmp_path / "minilm"
    shutil.copytree(packaged_embedding_dir(), model)
    (model / "model_card.json").write_text(json.dumps({"task": "embedding"}))
    with contextlib.chdir(tmp_path):
        for _ in range(2):
            registry.register(model, "minilm")
        registry.promote("minilm", "1")
    env = {"MODEL": "models:/minilm@champion", "TRACKING_URI": uri,
           "CACHE_DIR": str(tmp_path / "cache"), "REGISTRY_POLL_S": "0.3"}  # fmt: skip
    with service("embedding", env, timeout=300) as svc:
        r = httpx.post(f"{svc.url}/v1/embeddings", json={"input": "hello"}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == "models:/minilm/1"
        assert len(r.json()["data"][0]["embedding"]) == 384
        registry.promote("minilm", "2")
        end = time.monotonic() + 120
        while True:
            r = httpx.post(f"{svc.url}/v1/embeddings", json={"input": "hello"}, timeout=30)
            assert r.status_code == 200, r.text
            if r.json()["model"] == "models:/minilm/2":
                break
            assert time.monotonic() < end, svc.log()
            time.sleep(0.2)
        card = httpx.get(f"{svc.url}/v1/models").json()["data"][0]
        assert card["id"] == "models:/minilm/2" and card["revision"] == "v2"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri
