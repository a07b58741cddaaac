"""Scoring: a classifier checkpoint or a running service on labelled data, with scikit-learn.

Accuracy, precision/recall/F1 (macro, weighted and per class) and the confusion matrix (also as
PNG). A service is scored through its public API (``/v1/classify``), so the same command
measures what the fleet actually serves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet_toolkit import plots
from modelfleet_toolkit.data import Examples, clean, fingerprint, load_examples


def classification_metrics(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro/weighted P/R/F1, per-class figures and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    names = list(labels) if labels else sorted(set(gold) | set(pred))
    result: dict[str, Any] = {"accuracy": float(accuracy_score(gold, pred)), "rows": len(gold)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            gold, pred, labels=names, average=avg, zero_division=0
        )
        result.update(
            {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
        )
    p, r, f, s = precision_recall_fscore_support(
        gold, pred, labels=names, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(names)
    }
    result["labels"] = names
    result["confusion_matrix"] = confusion_matrix(gold, pred, labels=names).tolist()
    return result


def _examples(
    data: str | Path | Examples, text_column: str, label_column: str, do_clean: bool
) -> Examples:
    examples = (
        data if isinstance(data, Examples) else load_examples(data, text_column, label_column)
    )
    return clean(examples) if do_clean else examples


def predict(
    model_dir: str | Path, texts: Sequence[str], batch_size: int = 64, max_length: int = 128
) -> list[str]:
    """Labels a saved classifier predicts for ``texts`` (in-process, no service)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    id2label = model.config.id2label
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            ids = model(**batch).logits.argmax(-1).tolist()
            out += [str(id2label[int(i)]) for i in ids]
    return out


def _finish(
    result: dict[str, Any], examples: Examples, output_dir: str | Path | None
) -> dict[str, Any]:
    result["data"] = examples.source
    result["fingerprint"] = fingerprint(examples)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        png = plots.confusion_matrix(
            result["confusion_matrix"], result["labels"], out / "confusion_matrix.png"
        )
        result["confusion_matrix_png"] = str(png)
        (out / "evaluation.json").write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8"
        )
    return result


def evaluate_classifier(
    model_dir: str | Path,
    data: str | Path | Examples,
    *,
    text_column: str = "text",
    label_column: str = "label",
    do_clean: bool = True,
    batch_size: int = 64,
    max_length: int = 128,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a saved classifier on labelled ``data``; PNG + JSON into ``output_dir``."""
    examples = _examples(data, text_column, label_column, do_clean)
    pred = predict(model_dir, examples.texts, batch_size, max_length)
    from transformers import AutoConfig

    model_labels = list(AutoConfig.from_pretrained(str(model_dir)).label2id)
    labels = sorted(set(model_labels) | set(examples.labels))
    result = classification_metrics(examples.labels, pred, labels)
    result["model"] = str(model_dir)
    return _finish(result, examples, output_dir)


def evaluate_endpoint(
    url: str,
    task_or_labels: str | list[str],
    data: str | Path | Examples,
    *,
    text_column: str = "text",
    label_column: str = "label",
    do_clean: bool = False,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of what a running service (or the gateway) answers on ``/v1/classify``."""
    from modelfleet_toolkit.endpoint import classify_endpoint

    examples = _examples(data, text_column, label_column, do_clean)
    # A gateway with keys: the key comes from the environment, never from argv.
    key = os.environ.get("MODELFLEET_API_KEY") or None
    if isinstance(task_or_labels, str):
        pred = classify_endpoint(url, examples.texts, task=task_or_labels, api_key=key)
    else:
        pred = classify_endpoint(url, examples.texts, labels=task_or_labels, api_key=key)
    result = classification_metrics(examples.labels, pred, sorted(set(examples.labels) | set(pred)))
    result["endpoint"] = url
    result["task"] = task_or_labels
    return _finish(result, examples, output_dir)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())
