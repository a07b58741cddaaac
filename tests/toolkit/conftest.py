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


def heldout(task: str) -> Path:
    """The shipped held-out split of ``task``: the set ``make eval`` scores the default on."""
    from modelfleet_toolkit import datasets

    return datasets.path(task, "test")


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


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Toolkit tests train with one intra-op thread: the test machines are small and shared, and
    two threads contending with other processes made each step ~10x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with the packaged MiniLM's tokenizer, saved as a model directory.

    For tests of the machinery around training (tuning, folds, DDP) where the model's quality
    does not matter: the same code path as MiniLM at a fraction of the cost per step.
    """
    from tests.support.tiny import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))
