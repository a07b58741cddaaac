"""Labelled datasets that ship with the toolkit (package data), one folder per task.

``<task>/train.csv`` and ``<task>/test.csv``, columns ``text,label``, labels exactly those of the
classification service's built-in task. ``train.csv`` holds the service's shipped examples
(services/classification/tasks/<task>.json) plus texts written for the toolkit; ``test.csv`` is
the held-out set, the one copy that ``make eval`` also measures the serving default on, so the
two accuracies are figures on the same texts.
"""

from __future__ import annotations

import csv
from pathlib import Path

TASKS = ("intent", "sentiment")
SPLITS = ("train", "test")

_ROOT = Path(__file__).resolve().parent


def path(task: str, split: str) -> Path:
    """The CSV of one shipped split, e.g. ``path("intent", "test")``."""
    if task not in TASKS:
        raise ValueError(f"unknown dataset task {task!r}; shipped: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; shipped: {', '.join(SPLITS)}")
    return _ROOT / task / f"{split}.csv"


def read(task: str, split: str) -> tuple[list[str], list[str]]:
    """The texts and labels of one shipped split, in file order."""
    texts: list[str] = []
    labels: list[str] = []
    with path(task, split).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels
