"""evaluate and cv on real (tiny) trained models, through the CLI with --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from modelfleet_toolkit import cli
from modelfleet_toolkit.evaluate import classification_metrics
from tests.toolkit.conftest import heldout, shipped_rows, write_csv


def _json_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    assert cli.main(argv) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_classification_metrics_per_class_and_averages() -> None:
    gold = ["a", "a", "b", "b", "c", "c"]
    pred = ["a", "b", "b", "b", "c", "a"]
    m = classification_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert m["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_train_then_evaluate_a_model_dir_with_tracking(
    tmp_path: Path, tiny_encoder: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    data = write_csv(tmp_path / "s.csv", shipped_rows("sentiment", 8))
    model = tmp_path / "model"
    argv = ["train", "--json", "--model", str(tiny_encoder), "--data", str(data),
            "--max-steps", "2", "--max-length", "24", "--output-dir", str(model)]  # fmt: skip
    _json_out(capsys, argv)
    result = _json_out(capsys, ["evaluate", "--json", "--model", str(model),
                                "--data", str(heldout("sentiment")),
                                "--output-dir", str(tmp_path / "eval")])  # fmt: skip
    assert result["rows"] == 90
    assert set(result["per_class"]) == {"positive", "negative", "neutral"}  # type: ignore[arg-type]
    assert 0.0 <= float(result["f1_weighted"]) <= 1.0  # type: ignore[arg-type]
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    run = mlflow.MlflowClient(mlflow_uri).get_run(str(result["run_id"]))
    assert run.data.metrics["accuracy"] == result["accuracy"]
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_uri).list_artifacts(run.info.run_id)}
    assert "confusion_matrix.png" in artifacts


def test_cv_returns_k_scores_and_their_mean_and_std(
    tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "s.csv", shipped_rows("sentiment", 6))
    argv = ["cv", "--json", "-k", "3", "--no-track", "--model", str(tiny_encoder),
            "--data", str(data), "--max-steps", "2", "--max-length", "24",
            "--output-dir", str(tmp_path / "cv")]  # fmt: skip
    result = _json_out(capsys, argv)
    folds = result["folds"]
    assert isinstance(folds, list) and len(folds) == 3
    assert sum(f["rows"] for f in folds) == 18  # every example scored once, in its held-out fold
    accs = [f["accuracy"] for f in folds]
    assert result["accuracy_mean"] == pytest.approx(sum(accs) / 3)
    assert float(result["accuracy_std"]) >= 0  # type: ignore[arg-type]
