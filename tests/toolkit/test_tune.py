"""Optuna studies of real (tiny) training trials: samplers, pruning, a killed study resuming."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from modelfleet_toolkit.config import TrainConfig
from modelfleet_toolkit.tune import storage, tune
from modelfleet_toolkit.tuneconfig import ParamSpec, TuneConfig
from tests.toolkit.conftest import ROOT, shipped_rows, write_csv

SPACE = {
    "learning_rate": ParamSpec(type="float", low=1e-4, high=1e-2, log=True, grid=[1e-3, 5e-3]),
    "weight_decay": ParamSpec(type="categorical", choices=[0.0, 0.1]),
}


@pytest.fixture
def tiny_train(tmp_path: Path, tiny_encoder: Path) -> TrainConfig:
    data = write_csv(tmp_path / "s.csv", shipped_rows("sentiment", 6))
    return TrainConfig(
        model=str(tiny_encoder),
        data=str(data),
        eval_fraction=0.33,
        epochs=2,
        batch_size=8,
        max_length=24,
        logging_steps=1,
        track=False,
    )


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
def test_each_sampler_runs_three_trials(
    tmp_path: Path, tiny_train: TrainConfig, sampler: str, mlflow_uri: str
) -> None:
    tracked = sampler == "tpe"  # one of the three also checks the nested MLflow runs
    cfg = TuneConfig(
        train=tiny_train.model_copy(update={"track": tracked}),
        search_space=SPACE,
        sampler=sampler,  # type: ignore[arg-type]
        pruner="median",
        n_trials=3,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name=f"s-{sampler}",
        output_dir=str(tmp_path / "tune"),
    )
    result = tune(cfg)
    assert len(result["trials"]) == 3
    assert result["complete"] + result["pruned"] == 3
    assert result["complete"] >= 1 and set(result["best_params"]) == set(SPACE)
    assert (tmp_path / "tune" / "optimization_history.png").is_file()
    for t in result["trials"]:
        assert t["epochs"] is not None and 0 < t["epochs"] <= 2
    if sampler == "grid":  # the grid tried distinct points of its 2x2 grid
        assert len({tuple(sorted(t["params"].items())) for t in result["trials"]}) == 3
    if tracked:
        import mlflow

        client = mlflow.MlflowClient(mlflow_uri)
        parent = client.get_run(result["run_id"])
        assert parent.data.metrics["best_value"] == result["best_value"]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"optimization_history.png", "trials.json"} <= artifacts
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1", "trial-2"]


@pytest.mark.parametrize("pruner", ["median", pytest.param("hyperband", marks=pytest.mark.slow)])
def test_pruning_stops_weak_trials_and_counts_saved_epochs(
    tmp_path: Path, tiny_train: TrainConfig, pruner: str
) -> None:
    # On the validation loss (it varies continuously with the learning rate, unlike this tiny
    # model's accuracy), one evaluation per epoch over 4 epochs; learning rates from uselessly
    # small to large, so trials trail each other at the first evaluations.
    cfg = TuneConfig(
        train=tiny_train.model_copy(update={"epochs": 4, "metric": "loss"}),
        direction="minimize",
        search_space={"learning_rate": ParamSpec(type="float", low=1e-7, high=0.1, log=True)},
        sampler="random",
        pruner=pruner,  # type: ignore[arg-type]
        n_trials=6,
        storage=None,
        output_dir=str(tmp_path / "tune"),
    )
    result = tune(cfg)
    assert result["pruned"] >= 1, result["trials"]
    assert result["epochs_saved_by_pruning"] > 0, result["trials"]


def _finished(url: str, name: str) -> int:
    study = optuna.load_study(study_name=name, storage=storage(url))
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _finished_read_only(db: Path) -> int:
    """Finished trials, read with a read-only connection: an optuna storage opened while the
    child still creates the schema would race it for alembic_version (and the child can lose)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
    except sqlite3.OperationalError:  # no trials table yet, or the writer holds the lock
        return 0
    return int(row[0])


def test_a_killed_study_resumes(tmp_path: Path, tiny_train: TrainConfig) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [
        sys.executable,
        "-m",
        "modelfleet_toolkit",
        "tune",
        "--json",
        "--model",
        str(tiny_train.model),
        "--data",
        tiny_train.data,
        "--eval-fraction",
        "0.33",
        "--epochs",
        "2",
        "--max-length",
        "24",
        "--no-track",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--n-trials",
        "4",
        "--storage",
        url,
        "--study-name",
        "killed",
        "--output-dir",
        str(tmp_path / "tune"),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}:{ROOT}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _finished_read_only(tmp_path / "optuna.db")
            if done >= 1:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 1 <= done < 4, proc.stderr.read().decode() if proc.stderr else ""
    before = optuna.load_study(study_name="killed", storage=storage(url)).trials
    cfg: dict[str, Any] = {
        "train": tiny_train,
        "sampler": "random",
        "pruner": "none",
        "n_trials": 4,
        "storage": url,
        "study_name": "killed",
        "output_dir": str(tmp_path / "tune"),
    }
    result = tune(TuneConfig(**cfg))
    assert result["complete"] == 4  # the study finished its 4 trials across both processes
    after = {t["number"]: t for t in result["trials"]}
    for t in before:  # what finished before the kill is kept, not redone
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert after[t.number]["value"] == t.value
