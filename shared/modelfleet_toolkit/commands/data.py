"""``modelfleet data``: rows, labels and fingerprint of a labelled data set."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.config import DataConfig, add_flags, load_yaml, resolve
from modelfleet_toolkit.data import clean, fingerprint, load_examples


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "data",
        "inspect a labelled data set (rows, labels, fingerprint)",
        "Load CSV, JSONL or a datasets directory the way train does and describe it.\n\n"
        "  modelfleet data --data train.csv",
    )
    add_flags(parser, DataConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(DataConfig, load_yaml(args.config), args)
    examples = load_examples(cfg.data, cfg.text_column, cfg.label_column)
    if cfg.clean:
        examples = clean(examples)
    counts = Counter(examples.labels)
    result = {
        "data": cfg.data,
        "rows": len(examples),
        "fingerprint": fingerprint(examples),
        "labels": dict(sorted(counts.items())),
    }
    if args.json:
        console.emit_json(result)
    else:
        console.key_values(f"data: {cfg.data}", result)
        console.table("labels", ["label", "rows"], sorted(counts.items()))
    return 0
