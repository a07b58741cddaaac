"""``modelfleet tune``: an Optuna search over training settings."""

from __future__ import annotations

import argparse
import os
from typing import Any

from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.config import (
    ConfigError,
    TrainConfig,
    add_flags,
    flag_values,
    load_yaml,
)
from modelfleet_toolkit.tuneconfig import TuneConfig

# The study's storage URL from the environment: a shared storage's URL carries its password, and
# argv is visible to every user of the node (ps, /proc/<pid>/cmdline); the chart's tuning Job
# sets it from a Secret. Precedence: --storage > this variable > the config file's storage.
STORAGE_ENV = "MODELFLEET_TUNE_STORAGE"

# Flags named like a study setting (--seed, --output-dir) set the study's, not the trials'.
SHARED = frozenset(TuneConfig.model_fields) & frozenset(TrainConfig.model_fields)

EXAMPLES = """config file (tune.yaml):
  train: {data: train.csv, epochs: 3, max_length: 64}
  sampler: tpe            # tpe | random | grid
  pruner: median          # median | hyperband | none
  n_trials: 20
  storage: sqlite:///optuna.db     # or redis://redis:6379/0 shared by several workers
                                   # (env MODELFLEET_TUNE_STORAGE: a URL with a password)
  search_space:
    learning_rate: {type: float, low: 1.0e-5, high: 3.0e-4, log: true, grid: [2.0e-5, 1.0e-4]}
    batch_size: {type: categorical, choices: [8, 16, 32]}

examples:
  modelfleet tune -c tune.yaml
  modelfleet tune -c tune.yaml --sampler grid --study-name grid-1
  modelfleet tune -c tune.yaml              # again after a crash: the study resumes
  MODELFLEET_TUNE_STORAGE=redis://:$PW@redis:6379/1 modelfleet tune -c tune.yaml  # one worker
                                            # of several: each stops once the study holds n_trials
"""


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "tune",
        "search hyperparameters with Optuna (grid/random/TPE, pruning, resumable)",
        "Run training trials chosen by an Optuna sampler; prune weak trials on the validation\n"
        "metric; store trials so the search resumes and workers can share it.\n\n" + EXAMPLES,
    )
    add_flags(parser, TuneConfig)
    add_flags(parser, TrainConfig, exclude=SHARED)
    parser.set_defaults(handler=run)


def resolve_tune(args: argparse.Namespace) -> TuneConfig:
    """TuneConfig from the file's values, $MODELFLEET_TUNE_STORAGE and flags (training flags go
    into ``train``)."""
    values = load_yaml(args.config)
    if os.environ.get(STORAGE_ENV):
        values["storage"] = os.environ[STORAGE_ENV]
    train_values = {**values.pop("train", {}), **flag_values(args, TrainConfig, exclude=SHARED)}
    values.update(flag_values(args, TuneConfig))
    try:
        return TuneConfig.model_validate({**values, "train": train_values})
    except Exception as exc:
        raise ConfigError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from modelfleet_toolkit.tune import tune

    cfg = resolve_tune(args)
    if not cfg.train.data:
        raise ConfigError("no training data: set train.data in the config or pass --data")

    def show(trial: dict[str, Any]) -> None:
        console.err.print(
            f"trial {trial['number']}: {trial['state']} value={trial['value']} {trial['params']}"
        )

    result = tune(cfg, on_trial=show)
    if args.json:
        console.emit_json(result)
        return 0
    console.table(
        f"study {result['study']} ({cfg.sampler}, {cfg.pruner} pruning)",
        ["trial", "state", "value", "epochs", "params"],
        [(t["number"], t["state"], t["value"], t["epochs"], t["params"]) for t in result["trials"]],
    )
    summary = {k: v for k, v in result.items() if k not in ("trials",)}
    console.key_values("best", summary)
    return 0
