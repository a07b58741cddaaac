"""Stratified k-fold cross-validation: train on k-1 folds, score the held-out fold, k times."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelfleet_toolkit import tracking
from modelfleet_toolkit.config import TrainConfig
from modelfleet_toolkit.data import Examples, clean, load_examples, subset
from modelfleet_toolkit.evaluate import evaluate_classifier, mean_std

SUMMARY_METRICS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")


def cross_validate(
    config: TrainConfig,
    folds: int = 5,
    on_fold: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Each fold's figures plus mean and std over folds (scikit-learn's StratifiedKFold).

    Each fold trains with ``config`` (its eval split taken from the fold's training part, so the
    held-out fold is only ever scored) into ``output_dir/fold-<i>``.
    """
    from sklearn.model_selection import StratifiedKFold

    from modelfleet_toolkit.train import train

    examples: Examples = load_examples(config.data, config.text_column, config.label_column)
    if config.clean:
        examples = clean(examples)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    base = Path(config.output_dir)
    results: list[dict[str, Any]] = []
    enabled = config.track and not tracking.active()
    with tracking.run(
        config.experiment,
        config.run_name or "cv",
        {"folds": folds, **config.model_dump()},
        enabled=enabled,
    ) as run_id:
        for i, (train_idx, test_idx) in enumerate(splitter.split(examples.texts, examples.labels)):
            fold_dir = base / f"fold-{i}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            train_path = _write_csv(subset(examples, train_idx), fold_dir / "train.csv")
            fold_cfg = config.model_copy(
                update={
                    "data": str(train_path),
                    "eval_data": None,
                    "text_column": "text",
                    "label_column": "label",
                    "clean": False,  # cleaned once above
                    "output_dir": str(fold_dir),
                    "run_name": f"fold-{i}",
                }
            )
            trained = train(fold_cfg)
            scores = evaluate_classifier(
                trained.output_dir,
                subset(examples, test_idx),
                do_clean=False,
                max_length=config.max_length,
                output_dir=fold_dir,
            )
            row = {k: scores[k] for k in SUMMARY_METRICS} | {"fold": i, "rows": scores["rows"]}
            results.append(row)
            if enabled:
                tracking.log_metrics({f"fold_{k}": row[k] for k in SUMMARY_METRICS}, step=i)
            if on_fold:
                on_fold(i, row)
        summary: dict[str, Any] = {"folds": results, "k": folds, "run_id": run_id}
        for key in SUMMARY_METRICS:
            mean, std = mean_std([r[key] for r in results])
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean, std
        if enabled:
            tracking.log_metrics(
                {k: v for k, v in summary.items() if k.endswith(("_mean", "_std"))}
            )
    return summary


def _write_csv(examples: Examples, path: Path) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(examples.texts, examples.labels, strict=True))
    return path
