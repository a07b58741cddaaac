"""``modelfleet ship``: from a labelled CSV to a registered, exported and (maybe) promoted model.

Steps, each on the libraries the rest of the toolkit uses:

1. split a held-out set off the data (stratified, seeded); it is never trained or tuned on;
2. train on the rest (:func:`modelfleet_toolkit.train.train`, the Trainer, tracked in MLflow);
3. score the model on the held-out set (scikit-learn's metrics);
4. export the flavours and check each against float on the same held-out set;
5. register a new version (artifacts, metrics, data fingerprint, training run, flavours);
6. score the current ``champion`` on the *same* held-out set and promote the new version only
   when it is better (macro-F1, then accuracy); otherwise it becomes the ``challenger``.
   ``force`` promotes anyway. A classification service following ``models:/<name>@champion``
   picks the new version up by itself.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet import flavours as fl
from modelfleet_toolkit import registry
from modelfleet_toolkit.config import TrainConfig
from modelfleet_toolkit.data import Examples, clean, fingerprint, load_examples, stratified_split
from modelfleet_toolkit.export import Tokens, export


@dataclass
class ShipResult:
    name: str
    version: str
    promoted: bool
    reason: str
    held_out: dict[str, float]
    champion: dict[str, Any] | None
    flavours: dict[str, Any]
    model_dir: Path
    run_id: str | None
    seconds: dict[str, float] = field(default_factory=dict)


def score(model_dir: Path, texts: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of the float model in ``model_dir`` on labelled texts."""
    from sklearn.metrics import accuracy_score, f1_score

    tokens = Tokens(model_dir)
    runner = fl.load_runner(model_dir, fl.FLOAT)
    id2label = fl.load_torch(model_dir).config.id2label
    preds: list[str] = []
    for i in range(0, len(texts), 32):
        ids = np.argmax(runner.logits(tokens(texts[i : i + 32])), axis=1)
        preds += [str(id2label[int(j)]) for j in ids]
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro")),
    }


def _write_csv(path: Path, ex: Examples) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(ex.texts, ex.labels, strict=True))
    return path


def _champion_dir(name: str, version: str, into: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    source = registry.client().get_model_version(name, version).source
    return Path(download_artifacts(artifact_uri=str(source), dst_path=str(into)))


def _better(new: dict[str, float], old: dict[str, float]) -> bool:
    return (new["f1_macro"], new["accuracy"]) > (old["f1_macro"], old["accuracy"])


def ship(
    task: str,
    data: str | Path,
    *,
    name: str | None = None,
    work_dir: Path,
    train_overrides: dict[str, Any] | None = None,
    held_out_fraction: float = 0.2,
    flavours: Sequence[str] = fl.FLAVOURS,
    force: bool = False,
    seed: int = 42,
    text_column: str = "text",
    label_column: str = "label",
) -> ShipResult:
    """Train, evaluate, export, register and gate the promotion of one model version."""
    from modelfleet_toolkit.train import train

    name = name or f"{task}-clf"
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    examples = clean(load_examples(data, text_column, label_column))
    train_ex, held = stratified_split(examples, held_out_fraction, seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    train_csv = _write_csv(work_dir / "train.csv", train_ex)
    out = work_dir / "model"
    cfg = TrainConfig(
        data=str(train_csv), output_dir=str(out), seed=seed, experiment=f"ship-{name}",
        run_name=f"ship {name}", **(train_overrides or {}),
    )  # fmt: skip
    result = train(cfg, progress=False)
    seconds["train"] = time.perf_counter() - t0
    metrics = score(out, held.texts, held.labels)
    card = fl.model_card(out)
    card["task"] = task  # the name the classification service exposes
    card["held_out"] = {"fingerprint": fingerprint(held), "rows": len(held), **metrics}
    (out / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))
    t1 = time.perf_counter()
    calibration = train_ex.texts[:256]
    reports = export(
        out, held.texts, held.labels, wanted=flavours, calibration=calibration,
        held_out_name=f"{held_out_fraction:.0%} stratified split of {data}", rounds=1,
    )  # fmt: skip
    seconds["export"] = time.perf_counter() - t1
    reg = registry.register(
        out, name, parent_run_id=result.run_id,
        extra_tags={"held_out_fingerprint": fingerprint(held),
                    "held_out_f1_macro": f"{metrics['f1_macro']:.4f}"},
    )  # fmt: skip
    current = registry.alias_version(name, registry.CHAMPION)
    champion: dict[str, Any] | None = None
    if current is None:
        promoted, reason = True, "no champion yet"
    else:
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            champ_scores = score(_champion_dir(name, current, Path(tmp)), held.texts, held.labels)
        champion = {"version": current, **champ_scores}
        if _better(metrics, champ_scores):
            promoted, reason = True, f"beats champion v{current} on the same held-out set"
        elif force:
            promoted, reason = True, f"forced over champion v{current}"
        else:
            promoted, reason = False, f"does not beat champion v{current}"
    if promoted:
        registry.promote(name, reg.version, registry.CHAMPION, reason)
    else:
        registry.set_alias(name, registry.CHALLENGER, reg.version, "promote", reason)
    seconds["total"] = time.perf_counter() - t0
    return ShipResult(
        name=name, version=reg.version, promoted=promoted, reason=reason, held_out=metrics,
        champion=champion, flavours={k: vars(v) for k, v in reports.items()}, model_dir=out,
        run_id=result.run_id, seconds=seconds,
    )  # fmt: skip
