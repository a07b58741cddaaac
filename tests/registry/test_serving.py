"""A real classification service on ``models:/intent-clf@champion``: registered labels and task,
a promotion under load with zero failed requests, rollback, and the gateway's cache following
the model identity."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from modelfleet import flavours as fl
from tests.gateway.conftest import gateway
from tests.support.procs import Proc, start_service
from tests.support.trained import held_out

NAME = "intent-clf"


@dataclass
class Fleet:
    uri: str
    proc: Proc
    card: dict[str, object] = field(default_factory=dict)


def _registry(uri: str) -> object:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri  # the toolkit API reads it (this process only)
    from modelfleet_toolkit import registry

    return registry


@pytest.fixture(scope="module")
def fleet(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("registry-serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    reg = _registry(uri)
    with contextlib.chdir(root):
        v1 = reg.register(exported_model, NAME).version  # type: ignore[attr-defined]
        reg.register(exported_model, NAME)  # type: ignore[attr-defined]
        reg.promote(NAME, v1)  # type: ignore[attr-defined]
    env = {
        "MODEL": f"models:/{NAME}@champion",
        "TRACKING_URI": uri,
        "CACHE_DIR": str(root / "cache"),
        "REGISTRY_POLL_S": "0.3",
        "FLAVOUR": "auto",
        "MAX_INPUT_ITEMS": "64",
    }
    proc = start_service("classification", env, timeout=300)
    try:
        yield Fleet(uri, proc, fl.model_card(exported_model))
    finally:
        proc.stop()


def _model(proc: Proc) -> dict[str, object]:
    cards = httpx.get(f"{proc.url}/v1/models", timeout=5).json()["data"]
    assert len(cards) == 1
    return cards[0]  # type: ignore[no-any-return]


def _wait_for_model(proc: Proc, model_id: str, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while _model(proc)["id"] != model_id:
        assert time.monotonic() < end, f"{model_id} not served after {timeout}s:\n{proc.log()}"
        assert proc.alive(), proc.log()
        time.sleep(0.2)


def test_serves_the_champion_with_its_registered_labels(fleet: Fleet) -> None:
    card = _model(fleet.proc)
    assert card["id"] == f"models:/{NAME}/1"
    # auto picked a flavour the card records within budget, and names it in the revision
    revision = str(card["revision"])
    assert revision.startswith("v1")
    picked = revision.partition("+")[2] or "float"
    assert fleet.card["flavours"][picked]["within_budget"]  # type: ignore[index]
    tasks = httpx.get(f"{fleet.proc.url}/v1/classify/tasks", timeout=5).json()["data"]
    labels = fleet.card["labels"]
    assert tasks == [{"task": "intent", "labels": {lbl: lbl for lbl in labels}}]  # type: ignore[union-attr]
    texts, gold = held_out()
    r = httpx.post(f"{fleet.proc.url}/v1/classify", json={"input": texts[:40], "task": "intent"},
                   timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == f"models:/{NAME}/1"
    top = [d["labels"][0]["label"] for d in body["data"]]
    assert sum(a == b for a, b in zip(top, gold[:40], strict=True)) / 40 >= 0.9
    bad = httpx.post(f"{fleet.proc.url}/v1/classify", json={"input": "hi", "task": "sentiment"})
    assert bad.status_code == 400 and "intent" in bad.json()["error"]["message"]


class Load:
    """Clients posting back to back until stopped; every answer's status and model recorded."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.seen: list[list[str]] = [[] for _ in range(clients)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, i: int) -> None:
        texts = held_out()[0]
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(f"{self.url}/v1/classify",
                                    json={"input": texts[(i * 7 + n) % len(texts)]})  # fmt: skip
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        self.seen[i].append(r.json()["model"])
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self, model: str) -> int:
        return sum(s.count(model) for s in self.seen)


def test_promotion_under_load_then_rollback(fleet: Fleet) -> None:
    reg = _registry(fleet.uri)
    v1, v2 = f"models:/{NAME}/1", f"models:/{NAME}/2"
    with Load(fleet.proc.url) as load:
        end = time.monotonic() + 60
        while load.count(v1) < 8:  # traffic flows before the promotion
            assert time.monotonic() < end and not load.failures, load.failures
            time.sleep(0.05)
        reg.promote(NAME, "2", reason="test")  # type: ignore[attr-defined]
        end = time.monotonic() + 300
        while load.count(v2) < 20:  # the new version answers, under load
            assert time.monotonic() < end, f"v2 never answered:\n{fleet.proc.log()}"
            time.sleep(0.1)
    assert load.failures == []
    for seq in load.seen:  # one client's answers never go back to v1 once v2 answered
        first = seq.index(v2) if v2 in seq else len(seq)
        assert v1 not in seq[first:], seq
    assert _model(fleet.proc)["id"] == v2 and str(_model(fleet.proc)["revision"]).startswith("v2")

    reg.rollback(NAME)  # type: ignore[attr-defined]
    _wait_for_model(fleet.proc, v1)
    r = httpx.post(f"{fleet.proc.url}/v1/classify", json={"input": "hello"}, timeout=30)
    assert r.json()["model"] == v1


def test_gateway_cache_never_serves_the_old_version(fleet: Fleet, redis_proc: Proc) -> None:
    reg = _registry(fleet.uri)
    before = reg.alias_version(NAME, "champion")  # type: ignore[attr-defined]
    after = "2" if before == "1" else "1"
    body = {"input": "can I change my booking to Friday?", "task": "intent"}
    with gateway({"classification": fleet.proc.url}, redis_proc) as gw:
        first = httpx.post(f"{gw.url}/v1/classify", json=body, timeout=30)
        second = httpx.post(f"{gw.url}/v1/classify", json=body, timeout=30)
        assert second.headers["x-cache"] == "hit"
        assert second.json()["model"] == first.json()["model"] == f"models:/{NAME}/{before}"

        reg.promote(NAME, after, reason="cache test")  # type: ignore[attr-defined]
        _wait_for_model(fleet.proc, f"models:/{NAME}/{after}")
        end = time.monotonic() + 30
        while f"{NAME}/{after}" not in _identity(gw):  # the gateway's next health check
            assert time.monotonic() < end, _identity(gw)
            time.sleep(0.1)
        third = httpx.post(f"{gw.url}/v1/classify", json=body, timeout=30)
        assert third.headers["x-cache"] == "miss"
        assert third.json()["model"] == f"models:/{NAME}/{after}"


def _identity(gw: Proc) -> str:
    fleet = httpx.get(f"{gw.url}/v1/fleet", timeout=5).json()
    return str(fleet["pools"]["classification"]["model_identity"])
