"""PNG plots for run artifacts: loss and learning-rate curves, confusion matrix, Optuna plots.

matplotlib runs on its non-interactive Agg backend (no display on servers or in pods).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(log_history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training loss, evaluation loss and learning rate against the optimiser step."""
    plt = _pyplot()
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        pts = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), marker=".", label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    lr = [(h["step"], h["learning_rate"]) for h in log_history if "learning_rate" in h]
    if lr:
        ax_lr.plot(*zip(*lr, strict=True), marker=".")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """A confusion matrix (rows: true label, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(
                j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def optimisation_history(values: Sequence[float | None], maximize: bool, path: Path) -> Path:
    """Each trial's value and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [i for i, v in enumerate(values) if v is not None]
    ys = [v for v in values if v is not None]
    best: list[float] = []
    for v in ys:
        best.append(v if not best else (max if maximize else min)(best[-1], v))
    ax.plot(xs, ys, "o", label="trial")
    ax.plot(xs, best, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def param_importance(importances: Mapping[str, float], path: Path) -> Path:
    """Horizontal bars of Optuna's parameter importances."""
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.5 * max(1, len(names))))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
