"""Typed run configuration: a YAML file, then command-line flags that override it.

Each command's arguments are one pydantic model (the ``TrainingArguments`` + ``HfArgumentParser``
habit). :func:`add_flags` derives a ``--flag`` for every field from the model itself, so the CLI
can never drift from the config it fills; :func:`resolve` merges YAML and the flags a user gave
(only those: defaults come from the model, not from argparse) and validates once.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)

Schedule = Literal["linear", "cosine", "cosine_with_restarts", "one_cycle", "constant"]
Precision = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A config file or flag that cannot be used (unknown key, wrong type, missing file)."""


class DataConfig(BaseModel):
    """Where the labelled examples are and which columns hold text and label."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("", description="training data: .csv, .jsonl or a datasets directory")
    eval_data: str | None = Field(None, description="evaluation data (default: split off data)")
    eval_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="stratified split if no eval")
    text_column: str = Field("text", description="column holding the text")
    label_column: str = Field("label", description="column holding the label")
    clean: bool = Field(True, description="normalise whitespace and full-width punctuation")
    augment_delete: float = Field(0.0, ge=0.0, lt=1.0, description="random word deletion prob")
    augment_swap: int = Field(0, ge=0, description="random word swaps per augmented copy")
    augment_copies: int = Field(0, ge=0, description="augmented copies per training example")


class TrainConfig(DataConfig):
    """Everything ``modelfleet train`` needs; ``train_config.yaml`` in a model dir is this."""

    model: str = Field("", description="HF model id or directory (default: packaged MiniLM)")
    output_dir: str = Field("runs/model", description="where the model directory is written")
    max_length: int = Field(64, gt=0, description="tokens per example (longer ones truncated)")
    epochs: float = Field(3.0, gt=0, description="training epochs")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: epochs)")
    batch_size: int = Field(16, gt=0, description="per-device training batch")
    eval_batch_size: int = Field(64, gt=0, description="per-device evaluation batch")
    grad_accum: int = Field(1, gt=0, description="gradient accumulation steps")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear warmup share of steps")
    schedule: Schedule = Field("cosine", description="learning-rate schedule after warmup")
    num_cycles: int = Field(2, gt=0, description="restarts for cosine_with_restarts")
    dropout: float | None = Field(0.1, ge=0, lt=1, description="hidden+attention dropout")
    precision: Precision = Field("fp32", description="fp32, bf16 (CPU/GPU) or fp16 (CUDA)")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping (0: off)")
    gradient_checkpointing: bool = Field(False, description="recompute activations")
    sampler: Literal["random", "group_by_length", "sequential"] = Field(
        "group_by_length", description="order of training examples"
    )
    eval_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="when to eval")
    eval_steps: int = Field(50, gt=0, description="eval/save interval for eval_strategy=steps")
    metric: str = Field("accuracy", description="metric for best model and early stopping")
    early_stopping_patience: int = Field(0, ge=0, description="evals without gain (0: off)")
    early_stopping_threshold: float = Field(0.0, ge=0, description="smallest gain that counts")
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept")
    resume: str | None = Field(None, description="'last' or a checkpoint dir to resume from")
    seed: int = Field(42, description="seed for weights init, shuffling, dropout")
    logging_steps: int = Field(10, gt=0, description="log loss/LR every N steps")
    num_workers: int = Field(0, ge=0, description="dataloader worker processes")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train")
    track: bool = Field(True, description="log the run to MLflow")
    experiment: str = Field("modelfleet", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name")


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type``/``choices`` for a field's annotation (``X | None`` unwraps to X)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _flag_type(inner[0])
    if origin is Literal:
        choices = list(get_args(annotation))
        return type(choices[0]), {"choices": choices}
    if annotation in (int, float, str):
        return annotation, {}
    if annotation is bool:
        return bool, {}
    return str, {}


def add_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], exclude: frozenset[str] = frozenset()
) -> None:
    """One ``--field-name`` flag per scalar field of ``model``; unset flags stay out of the
    namespace, so only what the user typed overrides the config file."""
    group = parser.add_argument_group(f"{model.__name__} (override the config file)")
    for name, field in model.model_fields.items():
        if name in exclude or get_origin(field.annotation) is dict:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        flag = "--" + name.replace("_", "-")
        kind, extra = _flag_type(field.annotation)
        help_text = f"{field.description or ''} (default: {field.default!r})"
        if kind is bool:
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=name,
                type=kind,
                default=argparse.SUPPRESS,
                help=help_text,
                **extra,
            )


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1e-5`` (no dot) is the string "1e-5"; YAML 1.2, people
    writing learning rates and Helm's toYaml (a chart-rendered config) all mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML config file ({} without one)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: a config file holds a mapping of settings, got {type(loaded)}")
    return typing.cast(dict[str, Any], loaded)


def flag_values(
    args: argparse.Namespace, model: type[BaseModel], exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The flags for ``model``'s fields that the user actually gave."""
    given = vars(args)
    return {n: given[n] for n in model.model_fields if n in given and n not in exclude}


def resolve(model: type[M], file_values: dict[str, Any], args: argparse.Namespace) -> M:
    """``model`` from YAML values overridden by given flags, validated once."""
    merged = {**file_values, **flag_values(args, model)}
    try:
        return model.model_validate(merged)
    except Exception as exc:  # pydantic's ValidationError names every bad field
        raise ConfigError(str(exc)) from exc


def dump_yaml(config: BaseModel, path: Path) -> None:
    """Write the resolved config, so a model directory says exactly what produced it."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), "utf-8")
