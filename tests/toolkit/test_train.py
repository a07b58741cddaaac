"""Short real training runs of the packaged MiniLM on a few dozen examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelfleet_toolkit.callbacks import StopAtStep
from modelfleet_toolkit.config import TrainConfig
from modelfleet_toolkit.train import train

# Small and fast: 32-token inputs, batches of 8, a handful of steps.
FAST: dict[str, Any] = {
    "max_length": 32,
    "batch_size": 8,
    "eval_batch_size": 32,
    "logging_steps": 1,
    "track": False,
}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_and_run_is_tracked(
    sentiment_csv: Path, mlflow_uri: str, tmp_path: Path
) -> None:
    import mlflow

    out = tmp_path / "model"
    cfg = TrainConfig(
        **{**FAST, "track": True},
        data=str(sentiment_csv),
        output_dir=str(out),
        max_steps=12,
        learning_rate=2e-4,
        warmup_ratio=0.1,
        eval_strategy="steps",
        eval_steps=6,
        run_name="loss-falls",
    )
    result = train(cfg)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    assert result.metrics["train_samples_per_second"] > 0
    # The self-describing model directory.
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "train_config.yaml",
        "metrics.json",
        "model_card.json",
        "training_curves.png",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert set(config["label2id"]) == {"positive", "negative", "neutral"}
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["fingerprint"] == result.fingerprint
    assert card["data"]["rows"] + card["data"]["eval_rows"] == 36
    assert card["metrics"]["eval_accuracy"] == result.metrics["eval_accuracy"]

    # The MLflow run: params, per-step metrics, artifacts (plots and the model).
    assert result.run_id is not None
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["learning_rate"] == "0.0002"
    assert run.data.params["data_fingerprint"] == result.fingerprint
    assert "final_eval_accuracy" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(result.run_id, "loss")]
    assert steps == list(range(1, 13))
    assert len(client.get_metric_history(result.run_id, "learning_rate")) == 12
    top = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"training_curves.png", "model_card.json", "train_config.yaml", "model"} <= top
    model_files = {Path(a.path).name for a in client.list_artifacts(result.run_id, "model")}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= model_files


def test_early_stopping_on_a_plateau_restores_the_best_weights(
    sentiment_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    # A learning rate this small moves the weights but not the predictions: accuracy plateaus
    # from the first evaluation, so patience 2 stops at the third and the first stays best.
    cfg = TrainConfig(
        **FAST,
        data=str(sentiment_csv),
        output_dir=str(out),
        max_steps=40,
        learning_rate=1e-6,
        schedule="constant",
        warmup_ratio=0.0,
        eval_strategy="steps",
        eval_steps=2,
        early_stopping_patience=2,
        save_total_limit=5,
    )
    result = train(cfg)
    assert result.metrics["global_step"] == 6  # not 40: early stopping fired
    ckpts = out / "checkpoints"
    best, last = _weights(ckpts / "checkpoint-2"), _weights(ckpts / "checkpoint-6")
    assert not _same(best, last)  # training did move the weights after the best evaluation
    assert _same(_weights(out), best)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    sentiment_csv: Path, tmp_path: Path
) -> None:
    # Dropout on, shuffled length-grouped batches: resume must restore RNG and data position.
    common: dict[str, Any] = {
        **FAST,
        "data": str(sentiment_csv),
        "max_steps": 4,
        "eval_strategy": "no",
        "eval_steps": 2,
        "eval_fraction": 0.0,
        "dropout": 0.1,
        "learning_rate": 1e-4,
    }
    whole = train(TrainConfig(**common, output_dir=str(tmp_path / "whole")), progress=False)
    part_dir = str(tmp_path / "resumed")
    train(TrainConfig(**common, output_dir=part_dir), callbacks=[StopAtStep(2)], progress=False)
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train(TrainConfig(**common, output_dir=part_dir, resume="last"), progress=False)
    assert resumed.metrics["global_step"] == whole.metrics["global_step"] == 4
    a, b = _weights(whole.output_dir), _weights(resumed.output_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("precision", ["bf16"])
def test_mixed_precision_accumulation_checkpointing_one_cycle_run(
    sentiment_csv: Path, tmp_path: Path, precision: str
) -> None:
    cfg = TrainConfig(
        **{**FAST, "batch_size": 4},
        data=str(sentiment_csv),
        output_dir=str(tmp_path / "m"),
        max_steps=4,
        grad_accum=2,
        precision=precision,  # type: ignore[arg-type]
        gradient_checkpointing=True,
        schedule="one_cycle",
        warmup_ratio=0.5,
        augment_copies=1,
        augment_delete=0.2,
        augment_swap=1,
        eval_strategy="no",
    )
    result = train(cfg, progress=False)
    lrs = [h["learning_rate"] for h in result.log_history if "learning_rate" in h]
    # One-cycle: up to the peak over the first half, then down.
    assert max(lrs) == pytest.approx(cfg.learning_rate, rel=0.05)
    assert lrs.index(max(lrs)) in (1, 2) and lrs[-1] < max(lrs) / 2
    assert all(torch.isfinite(t).all() for t in _weights(result.output_dir).values())
    # Augmented copies double the training rows; the evaluation split is untouched.
    card = json.loads((result.output_dir / "model_card.json").read_text())
    assert card["data"]["rows"] == 2 * (36 - card["data"]["eval_rows"])
