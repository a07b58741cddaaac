"""Fine-tune an encoder with a sequence-classification head, on transformers' Trainer.

The Trainer provides AdamW with decoupled weight decay, mixed precision (bf16; fp16 with a
gradient scaler on CUDA), gradient accumulation, clipping and checkpointing, warmup schedules,
checkpoint + exact resume (optimizer, scheduler, RNG states, data position), seeding, DDP under
``torchrun``/``accelerate launch`` and length-grouped batches; this module maps a
:class:`~modelfleet_toolkit.config.TrainConfig` onto it, adds one-cycle, and writes the model
directory (:mod:`modelfleet_toolkit.modeldir`) and the MLflow run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelfleet_toolkit import modeldir, plots, tracking
from modelfleet_toolkit.callbacks import MlflowMetrics, RichProgress
from modelfleet_toolkit.config import ConfigError, TrainConfig
from modelfleet_toolkit.data import (
    DataError,
    Examples,
    augment,
    clean,
    fingerprint,
    load_examples,
    stratified_split,
)

# Attribute names that hold dropout probabilities across encoder families (BERT, DistilBERT,
# RoBERTa, XLM-R, DeBERTa ...); whichever a config has is set from TrainConfig.dropout.
_DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "seq_classif_dropout",
)


@dataclass
class TrainResult:
    """What a training run produced."""

    output_dir: Path
    metrics: dict[str, float]
    run_id: str | None
    labels: list[str] = field(default_factory=list)
    fingerprint: str = ""
    log_history: list[dict[str, Any]] = field(default_factory=list)


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 directory (no download)."""
    from modelfleet.resolve import packaged_embedding_dir

    return str(packaged_embedding_dir())


def prepare_splits(config: TrainConfig) -> tuple[Examples, Examples]:
    """(train, eval) examples: cleaned, eval split off or loaded, augmentation on train only."""
    examples = load_examples(config.data, config.text_column, config.label_column)
    if config.clean:
        examples = clean(examples)
    if config.eval_data:
        train_ex = examples
        eval_ex = load_examples(config.eval_data, config.text_column, config.label_column)
        if config.clean:
            eval_ex = clean(eval_ex)
    elif config.eval_fraction > 0:
        train_ex, eval_ex = stratified_split(examples, config.eval_fraction, config.seed)
    else:
        train_ex, eval_ex = examples, Examples([], [], examples.source)
    unknown = set(eval_ex.labels) - set(train_ex.labels)
    if unknown:
        raise DataError(f"eval labels not in the training data: {sorted(unknown)}")
    train_ex = augment(
        train_ex, config.augment_copies, config.augment_delete, config.augment_swap, config.seed
    )
    return train_ex, eval_ex


def _tokenized(tokenizer: Any, examples: Examples, label2id: dict[str, int], max_len: int) -> Any:
    import datasets

    # No padding here: DataCollatorWithPadding pads each batch to its own longest example.
    enc = tokenizer(examples.texts, truncation=True, max_length=max_len)
    columns = {k: list(v) for k, v in enc.items()}
    columns["labels"] = [label2id[lab] for lab in examples.labels]
    columns["length"] = [len(ids) for ids in enc["input_ids"]]
    return datasets.Dataset.from_dict(columns)


def _compute_metrics(eval_pred: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro", zero_division=0)),
    }


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_arguments(config: TrainConfig, ckpt_dir: Path, has_eval: bool) -> Any:
    """transformers ``TrainingArguments`` for ``config``."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available() and config.device != "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible")
    if config.precision == "fp16" and not cuda:
        raise ConfigError("precision=fp16 needs CUDA (its loss scaler); use bf16 on CPU")
    eval_strategy = config.eval_strategy if has_eval else "no"
    # Checkpoints follow evaluations (load_best_model_at_end needs both on one cadence); with no
    # evaluation they still come every eval_steps so a run can resume.
    save_strategy = eval_strategy if eval_strategy != "no" else "steps"
    metric = config.metric if config.metric.startswith("eval_") else f"eval_{config.metric}"
    sched_kwargs: dict[str, Any] = {}
    if config.schedule == "cosine_with_restarts":
        sched_kwargs["num_cycles"] = config.num_cycles
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        # one_cycle replaces the scheduler (ToolkitTrainer.create_scheduler); the type is unused.
        lr_scheduler_type="linear" if config.schedule == "one_cycle" else config.schedule,
        lr_scheduler_kwargs=sched_kwargs,
        max_grad_norm=config.max_grad_norm,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps,
        save_strategy=save_strategy,
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=eval_strategy != "no",
        metric_for_best_model=metric if eval_strategy != "no" else None,
        greater_is_better=None if "loss" not in metric else False,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy=config.sampler,
        dataloader_num_workers=config.num_workers,
        use_cpu=config.device == "cpu" or not cuda,
        ddp_backend=("gloo" if not cuda else "nccl") if _world_size() > 1 else None,
        report_to="none",
        disable_tqdm=True,
        save_only_model=False,
    )


def _trainer_class() -> Any:
    from transformers import Trainer

    class ToolkitTrainer(Trainer):
        """Trainer with a one-cycle schedule (torch's OneCycleLR) besides the built-in ones."""

        schedule = "cosine"

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.schedule == "one_cycle" and self.lr_scheduler is None:
                opt: Any = optimizer or self.optimizer
                self.lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(  # type: ignore[assignment]
                    opt,
                    max_lr=self.args.learning_rate,
                    total_steps=max(num_training_steps, 2),
                    pct_start=max(self.args.warmup_steps, 0.01),
                    anneal_strategy="cos",
                    cycle_momentum=False,
                )
                return self.lr_scheduler
            return super().create_scheduler(num_training_steps, optimizer)

    return ToolkitTrainer


def _load_model(config: TrainConfig, base: str, labels: list[str]) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    model_config = AutoConfig.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    if config.dropout is not None:
        for attr in _DROPOUT_ATTRS:
            if hasattr(model_config, attr):
                setattr(model_config, attr, config.dropout)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, config=model_config)
    return model, tokenizer


def _resume_path(config: TrainConfig, ckpt_dir: Path) -> str | None:
    if not config.resume:
        return None
    if config.resume != "last":
        return config.resume
    from transformers.trainer_utils import get_last_checkpoint

    last = None
    if ckpt_dir.is_dir():
        last = get_last_checkpoint(str(ckpt_dir))  # type: ignore[no-untyped-call]
    if last is None:
        raise ConfigError(f"resume=last but no checkpoint in {ckpt_dir}")
    return str(last)


def train(config: TrainConfig, callbacks: Sequence[Any] = (), progress: bool = True) -> TrainResult:
    """Train ``config`` and write its model directory; logs to MLflow unless ``track`` is off.

    ``callbacks`` are extra ``TrainerCallback`` objects (tuning uses one to report to Optuna).
    Inside an active MLflow run (a tuning study) the run is nested under it.
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    # The toolkit reports through rich and MLflow: transformers' own load reports and progress
    # bars would interleave with them (and its PrinterCallback would print dicts to stdout).
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    if not config.data:
        raise ConfigError("no training data: set data in the config or pass --data")
    base = config.model or default_model()
    train_ex, eval_ex = prepare_splits(config)
    labels = sorted(set(train_ex.labels))
    label2id = {lab: i for i, lab in enumerate(labels)}
    # Seeded before the head is created, so its initial weights repeat run to run.
    set_seed(config.seed)
    model, tokenizer = _load_model(config, base, labels)
    train_ds = _tokenized(tokenizer, train_ex, label2id, config.max_length)
    eval_ds = _tokenized(tokenizer, eval_ex, label2id, config.max_length) if len(eval_ex) else None

    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    args = training_arguments(config, ckpt_dir, eval_ds is not None)
    cbs: list[Any] = [MlflowMetrics(), *callbacks]
    if progress:
        cbs.append(RichProgress())
    if config.early_stopping_patience > 0 and eval_ds is not None:
        cbs.append(
            EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold)
        )
    trainer_cls = _trainer_class()
    trainer_cls.schedule = config.schedule
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=cbs,
    )
    trainer.remove_callback(PrinterCallback)
    resume = _resume_path(config, ckpt_dir)
    data_info = {
        "path": config.data,
        "fingerprint": fingerprint(train_ex),
        "rows": len(train_ex),
        "eval_path": config.eval_data or f"{config.eval_fraction:.0%} stratified split of data",
        "eval_fingerprint": fingerprint(eval_ex),
        "eval_rows": len(eval_ex),
    }
    params = {**config.model_dump(), "model": base, "data_fingerprint": data_info["fingerprint"]}
    enabled = config.track and _is_main()
    nested = enabled and tracking.active()
    with tracking.run(
        config.experiment, config.run_name, params, nested=nested, enabled=enabled
    ) as run_id:
        output = trainer.train(resume_from_checkpoint=resume)
        metrics: dict[str, float] = {
            k: float(v) for k, v in output.metrics.items() if isinstance(v, int | float)
        }
        if eval_ds is not None:
            # After load_best_model_at_end: the figures of the weights that are saved.
            final = trainer.evaluate()
            metrics.update({k: float(v) for k, v in final.items() if isinstance(v, int | float)})
        metrics["global_step"] = float(trainer.state.global_step)
        # Every rank calls save_model (it synchronises the processes); only rank 0 writes.
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            modeldir.write_metadata(
                out, config, base_model=base, labels=labels, data=data_info, metrics=metrics
            )
            plots.training_curves(trainer.state.log_history, out / "training_curves.png")
            if enabled:
                tracking.log_metrics({f"final_{k}": v for k, v in metrics.items()})
                tracking.log_artifact(out / "training_curves.png")
                for name in (modeldir.CONFIG_FILE, modeldir.METRICS_FILE, modeldir.CARD_FILE):
                    tracking.log_artifact(out / name)
                _log_model(out)
    return TrainResult(
        output_dir=out,
        metrics=metrics,
        run_id=run_id,
        labels=labels,
        fingerprint=str(data_info["fingerprint"]),
        log_history=list(trainer.state.log_history),
    )


def _log_model(out: Path) -> None:
    """The model directory (without checkpoints) as the run's ``model`` artifact."""
    for path in sorted(out.iterdir()):
        if path.name != "checkpoints":
            tracking.log_artifact(path, "model" if path.is_file() else f"model/{path.name}")
