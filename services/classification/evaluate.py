"""Held-out evaluation of the embedding classifier (``make eval``).

Loads the packaged embedding model in-process (or ``--model``), builds
:class:`~services.classification.embedding_classifier.EmbeddingClassifier` exactly as the service
does, and scores the held-out sets (written for the project, kept apart from the shipped
training examples):

- ``sentiment`` and ``intent``: the built-in tasks (head trained on the shipped examples), on
  ``shared/modelfleet_toolkit/datasets/<task>/test.csv``: the toolkit's held-out split, one copy,
  so the toolkit's accuracy and this one are figures on the same texts;
- ``topic``: custom labels, zero-shot, with the label descriptions a user would pass
  (``tests/data/classification/topic.jsonl`` and ``topic.labels.json``).

Baselines printed for comparison: zero-shot with label names only (and with the task's label
descriptions) for the built-in tasks, the topic task from label names only, and the built-in
head trained on just 15 shipped examples per label (mean over 5 random draws).

    python -m services.classification.evaluate            # tables
    python -m services.classification.evaluate --json     # one JSON document
    python -m services.classification.evaluate --check    # exit 1 if a task is below 0.85
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.classification.embedding_classifier import DEFAULT_TASKS_DIR, EmbeddingClassifier
from services.classification.training import train_head

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "tests" / "data" / "classification"
# Read by path, not through the package: the services never import the toolkit.
DEFAULT_HELDOUT_DIR = REPO_ROOT / "shared" / "modelfleet_toolkit" / "datasets"
TARGET_ACCURACY = 0.85
FEW_SHOT_K = 15
FEW_SHOT_DRAWS = 5


# --------------------------------------------------------------------------------------------
# data and metrics


def load_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts.append(str(row["text"]))
            labels.append(str(row["label"]))
    return texts, labels


def load_csv(path: Path) -> tuple[list[str], list[str]]:
    """A ``text,label`` CSV, in file order."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-label precision/recall/F1/support (numpy only)."""
    g = np.array(gold)
    p = np.array(pred)
    per_label: dict[str, dict[str, float]] = {}
    f1s = []
    for lab in labels:
        tp = float(np.sum((p == lab) & (g == lab)))
        fp = float(np.sum((p == lab) & (g != lab)))
        fn = float(np.sum((p != lab) & (g == lab)))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        per_label[lab] = {
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(f1, 4),
            "support": int(tp + fn),
        }
    confusion = {
        gl: {
            pl: int(np.sum((g == gl) & (p == pl))) for pl in labels if np.any((g == gl) & (p == pl))
        }
        for gl in labels
    }
    return {
        "n": len(g),
        "accuracy": round(float(np.mean(g == p)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_label": per_label,
        "confusion": confusion,
    }


def calibration_error(ranked: list[list[tuple[str, float]]], gold: Sequence[str]) -> float:
    """Expected calibration error of the top score (10 equal-width bins)."""
    conf = np.array([r[0][1] for r in ranked])
    hit = np.array([r[0][0] == g for r, g in zip(ranked, gold, strict=True)], dtype=float)
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = 0.0
    for b in range(10):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return round(float(ece), 4)


# --------------------------------------------------------------------------------------------
# the model


def make_encoder(model: str, device: str) -> tuple[Callable[[list[str]], np.ndarray], str]:
    """An ``encode`` callable over the shared SentenceEncoder, memoised per text."""
    from modelfleet.encoder import SentenceEncoder
    from modelfleet.resolve import PACKAGED_EMBEDDING, packaged_embedding_dir, resolve

    source = resolve(model, packaged=packaged_embedding_dir, packaged_name=PACKAGED_EMBEDDING)
    encoder = SentenceEncoder(source, device=device, dtype="float32")
    encoder.load()
    memo: dict[str, np.ndarray] = {}

    def encode(texts: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        for i in range(0, len(todo), 64):
            chunk = todo[i : i + 64]
            for t, e in zip(chunk, encoder.encode(chunk).embeddings, strict=True):
                memo[t] = e
        return np.stack([memo[t] for t in texts])

    return encode, source.name


# --------------------------------------------------------------------------------------------
# the evaluation


def evaluate(
    model: str = "",
    device: str = "cpu",
    data_dir: Path = DEFAULT_DATA_DIR,
    tasks_dir: Path = DEFAULT_TASKS_DIR,
    heldout_dir: Path = DEFAULT_HELDOUT_DIR,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    encode, model_name = make_encoder(model, device)
    t_load = time.perf_counter() - t0

    clf = EmbeddingClassifier(encode, tasks_dir)
    t1 = time.perf_counter()
    clf.prepare()
    t_prepare = time.perf_counter() - t1

    results: list[dict[str, Any]] = []

    def run(
        name: str,
        mode: str,
        texts: list[str],
        gold: list[str],
        *,
        primary: bool,
        **kwargs: Any,
    ) -> dict[str, Any]:
        ranked = clf.classify(encode(texts), **kwargs)
        label_names = list(kwargs["labels"]) if kwargs.get("task") is None else None
        labels = label_names or list(clf.tasks()[kwargs["task"]])
        row = {
            "task": name,
            "mode": mode,
            "primary": primary,
            **metrics(gold, [r[0][0] for r in ranked], labels),
            "calibration_error": calibration_error(ranked, gold),
        }
        results.append(row)
        return row

    # built-in tasks: the shipped head, then the zero-shot and 15-shot baselines
    for task in ("sentiment", "intent"):
        if task not in clf.tasks():
            continue
        texts, gold = load_csv(heldout_dir / task / "test.csv")
        spec = clf.specs[task]
        per_label = min(len(v) for v in spec.examples.values())
        run(
            task,
            f"few-shot head ({per_label}+ examples/label)",
            texts,
            gold,
            primary=True,
            task=task,
        )
        run(task, "zero-shot, label names", texts, gold, primary=False, labels=list(spec.labels))
        run(
            task,
            "zero-shot, label descriptions",
            texts,
            gold,
            primary=False,
            labels=dict(spec.labels),
        )
        results.append(few_shot_subsample(clf, encode, task, texts, gold))

    # custom labels, zero-shot, as a user would pass them
    topic_labels: dict[str, str] = json.loads((data_dir / "topic.labels.json").read_text())
    texts, gold = load_jsonl(data_dir / "topic.jsonl")
    run("topic", "zero-shot, label descriptions", texts, gold, primary=True, labels=topic_labels)
    run("topic", "zero-shot, label names", texts, gold, primary=False, labels=list(topic_labels))

    return {
        "model": model_name,
        "target_accuracy": TARGET_ACCURACY,
        "classifier": {
            "head": "softmax regression on embeddings (numpy), temperature-calibrated",
            "l2": clf.l2,
            "temperatures": {k: round(h.temperature, 4) for k, h in clf.heads.items()},
            "train_cv_accuracy": {k: round(h.cv_accuracy, 4) for k, h in clf.heads.items()},
            "train_examples": {
                k: sum(len(v) for v in s.examples.values()) for k, s in clf.specs.items()
            },
            "zero_shot_temperature": round(clf.zero_shot_temperature, 4),
        },
        "seconds": {"model_load": round(t_load, 2), "prepare": round(t_prepare, 2)},
        "results": results,
    }


def few_shot_subsample(
    clf: EmbeddingClassifier,
    encode: Callable[[list[str]], np.ndarray],
    task: str,
    texts: list[str],
    gold: list[str],
) -> dict[str, Any]:
    """The head trained on FEW_SHOT_K random shipped examples per label, mean of a few draws."""
    spec = clf.specs[task]
    labels = list(spec.labels)
    x_eval = encode(texts)
    accs, f1s = [], []
    for draw in range(FEW_SHOT_DRAWS):
        rng = np.random.default_rng(1000 + draw)
        chosen: list[str] = []
        y: list[int] = []
        for i, lab in enumerate(labels):
            pool = spec.examples[lab]
            pick = rng.choice(len(pool), size=min(FEW_SHOT_K, len(pool)), replace=False)
            chosen.extend(pool[j] for j in pick)
            y.extend([i] * len(pick))
        head = train_head(encode(chosen), np.array(y), labels, l2=clf.l2, seed=draw)
        pred = [labels[j] for j in head.logits(x_eval).argmax(axis=1)]
        m = metrics(gold, pred, labels)
        accs.append(m["accuracy"])
        f1s.append(m["macro_f1"])
    return {
        "task": task,
        "mode": f"few-shot head, {FEW_SHOT_K} examples/label (mean of {FEW_SHOT_DRAWS} draws)",
        "primary": False,
        "n": len(gold),
        "accuracy": round(float(np.mean(accs)), 4),
        "accuracy_min": round(float(np.min(accs)), 4),
        "accuracy_max": round(float(np.max(accs)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
    }


# --------------------------------------------------------------------------------------------
# output


def format_report(report: dict[str, Any]) -> str:
    lines = [f"model: {report['model']}"]
    c = report["classifier"]
    lines.append(
        f"classifier: {c['head']}; l2={c['l2']}; temperatures={c['temperatures']}; "
        f"zero-shot temperature={c['zero_shot_temperature']}"
    )
    lines.append(
        f"training examples: {c['train_examples']}; 5-fold CV accuracy on them: "
        f"{c['train_cv_accuracy']}"
    )
    lines.append(
        f"model load {report['seconds']['model_load']} s, prepare {report['seconds']['prepare']} s"
    )
    lines.append("")
    header = f"{'task':<10} {'mode':<58} {'n':>4} {'accuracy':>9} {'macro-F1':>9} {'ECE':>6}"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        mark = "*" if r["primary"] else " "
        ece = f"{r['calibration_error']:.3f}" if "calibration_error" in r else "-"
        lines.append(
            f"{r['task']:<10} {mark}{r['mode']:<57} {r['n']:>4} {r['accuracy']:>9.3f} "
            f"{r['macro_f1']:>9.3f} {ece:>6}"
        )
    lines.append(
        f"* = the figure for the task (target: accuracy >= {report['target_accuracy']:.2f}); "
        "ECE = expected calibration error of the top score"
    )
    for r in report["results"]:
        if not r["primary"]:
            continue
        lines += ["", f"{r['task']} ({r['mode']}): per-label", ""]
        lines.append(f"  {'label':<20} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}")
        for lab, m in r["per_label"].items():
            lines.append(
                f"  {lab:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} "
                f"{m['support']:>4}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m services.classification.evaluate",
        description="Accuracy and macro-F1 of the embedding classifier on the held-out sets.",
    )
    ap.add_argument("--model", default="", help="embedding model dir or HF id (default: packaged)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    ap.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the topic set's folder"
    )
    ap.add_argument(
        "--heldout-dir",
        type=Path,
        default=DEFAULT_HELDOUT_DIR,
        help="folder with <task>/test.csv for the built-in tasks (default: the toolkit's datasets)",
    )
    ap.add_argument("--tasks-dir", type=Path, default=DEFAULT_TASKS_DIR)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if a task's accuracy is below {TARGET_ACCURACY}",
    )
    args = ap.parse_args(argv)

    report = evaluate(args.model, args.device, args.data_dir, args.tasks_dir, args.heldout_dir)
    failing = [
        f"{r['task']}: {r['accuracy']:.3f}"
        for r in report["results"]
        if r["primary"] and r["accuracy"] < TARGET_ACCURACY
    ]
    report["passed"] = not failing
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if failing:
            print(f"\nbelow target {TARGET_ACCURACY}: {', '.join(failing)}")
    return 1 if (args.check and failing) else 0


if __name__ == "__main__":
    sys.exit(main())
