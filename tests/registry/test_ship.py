"""``modelfleet ship``: the promotion gate, and (slow) the wall time from a CSV to a promoted
version answering from a running classification service."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import httpx
import pytest

from modelfleet_toolkit import datasets, registry
from tests.gateway.conftest import gateway
from tests.registry.conftest import cli
from tests.support.procs import ROOT, start_service
from tests.support.trained import held_out, intent_examples


def intent_csv(path: Path) -> Path:
    texts, labels = intent_examples()
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    return path


def serving_default_accuracy(texts: list[str], gold: list[str]) -> float:
    """The classification service's default (embedding head), in-process as make eval runs it."""
    from services.classification.embedding_classifier import EmbeddingClassifier
    from services.classification.evaluate import make_encoder

    encode, _ = make_encoder("", "cpu")
    clf = EmbeddingClassifier(encode)
    clf.prepare()
    top = [r[0][0] for r in clf.classify(encode(texts), task="intent")]
    return sum(a == b for a, b in zip(top, gold, strict=True)) / len(gold)


def ship(store: str, data: Path, work: Path, *extra: str) -> dict[str, object]:
    out = cli("ship", "--task", "intent", "--data", str(data), "--name", "intent-clf",
              "--work-dir", str(work), "--json", *extra, uri=store, timeout=1800)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_a_losing_ship_does_not_promote(trained_model: Path, store: str, tmp_path: Path) -> None:
    champion = registry.register(trained_model, "intent-clf").version
    registry.promote("intent-clf", champion)
    data = intent_csv(tmp_path / "intent.csv")
    # two optimiser steps: a real but barely trained model, far below the champion
    weak = ship(store, data, tmp_path / "w1", "--max-steps", "2", "--flavours", "float")
    assert weak["promoted"] is False, weak
    champ = weak["champion"]
    assert champ["version"] == champion  # type: ignore[index]
    assert champ["f1_macro"] > weak["held_out"]["f1_macro"]  # type: ignore[index]
    assert registry.alias_version("intent-clf", "champion") == champion
    assert registry.alias_version("intent-clf", "challenger") == weak["version"]
    # the registered version carries the ship's evidence
    v = registry.show("intent-clf")["versions"][-1]
    assert v["version"] == weak["version"] and v["run_id"] == weak["run_id"]
    assert v["metrics"] and v["flavours"]["float"]["agreement"] == 1.0


@pytest.mark.slow
def test_force_promotes_a_loser(trained_model: Path, store: str, tmp_path: Path) -> None:
    champion = registry.register(trained_model, "intent-clf").version
    registry.promote("intent-clf", champion)
    data = intent_csv(tmp_path / "intent.csv")
    forced = ship(store, data, tmp_path / "w2", "--max-steps", "2", "--flavours", "float",
                  "--force")  # fmt: skip
    assert forced["promoted"] is True and "forced" in str(forced["reason"])
    assert registry.alias_version("intent-clf", "champion") == forced["version"]


@pytest.mark.slow
def test_csv_to_served_wall_time(store: str, tmp_path: Path) -> None:
    """The shipped intent data from CSV to a promoted version served by a running service."""
    data = intent_csv(tmp_path / "intent.csv")
    first = ship(store, data, tmp_path / "w0", "--max-steps", "2", "--flavours", "float")
    assert first["promoted"] is True  # no champion yet
    svc = start_service("classification", {
        "MODEL": "models:/intent-clf@champion", "TRACKING_URI": store,
        "CACHE_DIR": str(tmp_path / "cache"), "REGISTRY_POLL_S": "1", "MAX_INPUT_ITEMS": "256",
    }, timeout=300)  # fmt: skip
    try:
        t0 = time.perf_counter()
        # The toolkit's intent training set (478 rows), 8 epochs: what eval-toolkit trains on.
        res = ship(store, datasets.path("intent", "train"), tmp_path / "w1",
                   "--epochs", "8", "--learning-rate", "1e-4")  # fmt: skip
        shipped = time.perf_counter() - t0
        assert res["promoted"] is True, res
        want = f"models:/intent-clf/{res['version']}"
        end = time.monotonic() + 300
        while True:
            r = httpx.post(f"{svc.url}/v1/classify", json={"input": "hello there"}, timeout=30)
            if r.json()["model"] == want:
                break
            assert time.monotonic() < end, svc.log()
            time.sleep(0.2)
        served = time.perf_counter() - t0
        # Held-out accuracy of the served version through the gateway (the shipped intent
        # test set, kept apart from training), beside the serving default on the same texts.
        texts, gold = held_out()
        with gateway({"classification": svc.url}) as gw:
            r = httpx.post(f"{gw.url}/v1/classify", json={"input": texts, "task": "intent"},
                           timeout=120)  # fmt: skip
        assert r.json()["model"] == want
        top = [d["labels"][0]["label"] for d in r.json()["data"]]
        accuracy = sum(a == b for a, b in zip(top, gold, strict=True)) / len(gold)
    finally:
        svc.stop()
    default = serving_default_accuracy(texts, gold)
    figures = {"ship_seconds": round(shipped, 1), "csv_to_served_seconds": round(served, 1),
               "served_held_out_accuracy": round(accuracy, 4),
               "serving_default_held_out_accuracy": round(default, 4),
               "steps": res["seconds"], "held_out": res["held_out"],
               "champion_before": res["champion"], "flavours": res["flavours"]}  # fmt: skip
    out = ROOT / ".run" / "registry-figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
