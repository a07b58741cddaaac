"""``modelfleet cv``: stratified k-fold cross-validation of a training config."""

from __future__ import annotations

import argparse
from typing import Any

from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.config import ConfigError, TrainConfig, add_flags, load_yaml, resolve
from modelfleet_toolkit.cv import SUMMARY_METRICS


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "cv",
        "stratified k-fold cross-validation (each fold + mean ± std)",
        "Train on k-1 folds and score the held-out fold, k times (scikit-learn's\n"
        "StratifiedKFold); same config and flags as train.\n\n"
        "examples:\n  modelfleet cv --data train.csv --folds 5 --epochs 2\n",
    )
    parser.add_argument("--folds", "-k", type=int, default=5, help="number of folds (default: 5)")
    add_flags(parser, TrainConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from modelfleet_toolkit.cv import cross_validate

    if args.folds < 2:
        raise ConfigError("--folds must be at least 2")
    config = resolve(TrainConfig, load_yaml(args.config), args)
    if not config.data:
        raise ConfigError("no training data: set data in the config or pass --data")

    def show(i: int, row: dict[str, Any]) -> None:
        console.err.print(
            f"fold {i}: accuracy={row['accuracy']:.4f} f1_macro={row['f1_macro']:.4f}"
        )

    result = cross_validate(config, args.folds, on_fold=show)
    if args.json:
        console.emit_json(result)
        return 0
    console.table(
        f"{args.folds}-fold cross-validation",
        ["fold", "rows", *SUMMARY_METRICS],
        [(r["fold"], r["rows"], *(r[k] for k in SUMMARY_METRICS)) for r in result["folds"]]
        + [
            (
                "mean ± std",
                "",
                *(f"{result[k + '_mean']:.4f} ± {result[k + '_std']:.4f}" for k in SUMMARY_METRICS),
            )
        ],
    )
    return 0
