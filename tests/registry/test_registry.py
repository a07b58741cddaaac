"""``modelfleet registry``: versions with their metadata, promote, rollback and the history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelfleet_toolkit import registry
from tests.registry.conftest import cli


def slim_copy(model: Path, into: Path) -> Path:
    """The model's card and config without weights: enough for alias bookkeeping tests."""
    into.mkdir(parents=True)
    for name in ("config.json", "model_card.json", "metrics.json"):
        shutil.copy(model / name, into / name)
    return into


def test_register_promote_rollback(exported_model: Path, trained_model: Path, store: str) -> None:
    out = cli("registry", "register", str(exported_model), "--name", "intent-clf", "--json",
              uri=store)  # fmt: skip
    v1 = json.loads(out.stdout)["version"]
    v2 = registry.register(slim_copy(trained_model, Path("slim")), "intent-clf").version
    assert (v1, v2) == ("1", "2")

    registry.promote("intent-clf", v1, reason="first")
    registry.promote("intent-clf", v2)
    registry.promote("intent-clf", v1, alias="challenger")
    assert registry.alias_version("intent-clf", "champion") == "2"

    back = json.loads(cli("registry", "rollback", "intent-clf", "--json", uri=store).stdout)
    assert back["version"] == "1" and back["previous"] == "2" and back["action"] == "rollback"
    assert registry.alias_version("intent-clf", "champion") == "1"
    # nothing before v1: a second rollback is refused, the alias stays
    with pytest.raises(registry.RegistryError, match="no earlier version"):
        registry.rollback("intent-clf")
    assert registry.alias_version("intent-clf", "champion") == "1"

    shown = registry.show("intent-clf")
    moves = [(h["alias"], h["version"], h["previous"], h["action"]) for h in shown["history"]]
    assert moves == [
        ("champion", "1", None, "promote"),
        ("champion", "2", "1", "promote"),
        ("challenger", "1", None, "promote"),
        ("champion", "1", "2", "rollback"),
    ]
    assert shown["aliases"] == {"champion": "1", "challenger": "1"}
    v = shown["versions"][0]
    card = json.loads((exported_model / "model_card.json").read_text())
    assert v["data_fingerprint"] == card["data"]["fingerprint"]
    assert v["metrics"] == card["metrics"]
    assert v["flavours"]["onnx"]["within_budget"] is True
    assert v["run_id"]
    # the version's artifacts are the whole model directory, flavours included
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(artifact_uri=v["source"], dst_path="dl"))
    for rel in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "model_card.json",
        "flavours/onnx/model.onnx",
        "flavours/onnx-int8-dynamic/model.onnx",
        "flavours/onnx-int8-static/model.onnx",
        "flavours/torch-int8/flavour.json",
    ):
        assert (local / rel).exists(), rel
    # the printed history (what a person reads) names every move
    text = cli("registry", "show", "intent-clf", uri=store).stdout
    assert "rollback" in text and "first" in text


def test_rollback_after_rollback_goes_further_back(trained_model: Path, store: str) -> None:
    for i in range(3):
        registry.register(slim_copy(trained_model, Path(f"m{i}")), "m")
    for v in ("1", "2", "3"):
        registry.promote("m", v)
    assert registry.rollback("m")["version"] == "2"
    assert registry.rollback("m")["version"] == "1"


def test_unknown_version_is_a_usage_error(store: str, trained_model: Path) -> None:
    registry.register(slim_copy(trained_model, Path("slim")), "intent-clf")
    out = cli("registry", "promote", "intent-clf", "7", uri=store, check=False)
    assert out.returncode == 2 and "no version 7" in out.stderr
