"""Fixtures for the toolkit tests: small labelled CSVs cut from the services' shipped examples,
and an MLflow store in the test's temporary directory."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "services" / "classification" / "tasks"
HELD_OUT = ROOT / "tests" / "data" / "classification"


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def shipped_rows(
    task: str, per_label: int, labels: list[str] | None = None
) -> list[tuple[str, str]]:
    """The first ``per_label`` shipped examples of each label (optionally only ``labels``)."""
    examples: dict[str, list[str]] = json.loads((TASKS / f"{task}.json").read_text())["examples"]
    rows = []
    for label, texts in examples.items():
        if labels is None or label in labels:
            rows += [(t, label) for t in texts[:per_label]]
    return rows


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite tracking store; the working directory is the test's tmp dir."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    """36 sentiment rows (12 per label)."""
    return write_csv(tmp_path / "sentiment.csv", shipped_rows("sentiment", 12))
