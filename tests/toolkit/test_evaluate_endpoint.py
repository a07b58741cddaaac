"""``evaluate --endpoint`` scores what a real running classification service answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfleet_toolkit import cli
from tests.support.procs import Proc
from tests.toolkit.conftest import heldout


def test_evaluate_endpoint_scores_the_running_service(
    classification_proc: Proc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--json", "--no-track", "--endpoint", classification_proc.url,
            "--task", "intent", "--data", str(heldout("intent")),
            "--output-dir", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 120
    assert result["endpoint"] == classification_proc.url
    # The service's shipped intent head scores 0.958 on this held-out set (make eval).
    assert result["accuracy"] >= 0.9
    assert set(result["per_class"]) >= {"greeting", "booking", "cancel_refund"}
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_evaluate_endpoint_with_custom_labels(
    classification_proc: Proc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--json", "--no-track", "--endpoint", classification_proc.url,
            "--labels", "positive,negative,neutral", "--data", str(heldout("sentiment")),
            "--output-dir", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 90
    assert set(result["labels"]) <= {"positive", "negative", "neutral"}
    assert result["accuracy"] > 1 / 3  # zero-shot label names, well above chance
