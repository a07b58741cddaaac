"""The self-describing model directory a training run writes.

``save_pretrained`` weights (safetensors) and config (id2label/label2id), the tokenizer,
``train_config.yaml`` (the resolved config), ``metrics.json`` and ``model_card.json`` (task,
labels, base model, data path + fingerprint + rows, metrics, created).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelfleet_toolkit.config import TrainConfig, dump_yaml

CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"
CARD_FILE = "model_card.json"


def write_metadata(
    out: Path,
    config: TrainConfig,
    *,
    base_model: str,
    labels: list[str],
    data: dict[str, Any],
    metrics: dict[str, float],
) -> None:
    """The config, metrics and model card beside the saved weights."""
    dump_yaml(config, out / CONFIG_FILE)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    card = {
        "task": "text-classification",
        "labels": labels,
        "base_model": base_model,
        "data": data,
        "metrics": metrics,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", "utf-8")


def read_card(model_dir: Path) -> dict[str, Any]:
    """``model_card.json`` of a model directory ({} when absent: a plain HF checkpoint)."""
    path = model_dir / CARD_FILE
    if not path.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded
