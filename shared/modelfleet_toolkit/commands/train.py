"""``modelfleet train``: fine-tune a classifier and write a model directory."""

from __future__ import annotations

import argparse
from typing import Any

from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.config import TrainConfig, add_flags, load_yaml, resolve

EXAMPLES = """examples:
  modelfleet train --data train.csv --output-dir runs/intent
  modelfleet train -c train.yaml --learning-rate 3e-5 --precision bf16
  modelfleet train -c train.yaml --resume last           # continue from the last checkpoint
  torchrun --nproc-per-node 2 -m modelfleet_toolkit train -c train.yaml   # data parallel
"""


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "train",
        "fine-tune an encoder classifier (HF Trainer), tracked in MLflow",
        "Fine-tune a Hugging Face encoder (default: the packaged MiniLM) with a sequence-\n"
        "classification head on labelled text, and write a model directory (safetensors,\n"
        "tokenizer, label map, train_config.yaml, metrics.json, model_card.json).\n\n" + EXAMPLES,
    )
    add_flags(parser, TrainConfig)
    parser.set_defaults(handler=run)


def resolve_train(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the config file's values overridden by the flags given."""
    return resolve(TrainConfig, load_yaml(args.config), args)


def run(args: argparse.Namespace) -> int:
    from modelfleet_toolkit.train import train

    config = resolve_train(args)
    result = train(config)
    summary: dict[str, Any] = {
        "output_dir": str(result.output_dir),
        "run_id": result.run_id,
        "labels": result.labels,
        "data_fingerprint": result.fingerprint,
        "metrics": result.metrics,
    }
    if args.json:
        console.emit_json(summary)
    else:
        console.key_values(f"trained: {result.output_dir}", {**summary, **result.metrics})
    return 0
