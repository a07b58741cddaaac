"""``modelfleet embed``: fine-tune an embedding model on pairs/triplets and measure retrieval."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.data import DataError


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "embed",
        "fine-tune a sentence-transformers model on pairs or triplets (MNRL)",
        "Columns anchor, positive (and negative for triplets; score for similarity\n"
        "correlation). Prints held-out recall@k, MRR and Spearman before and after; --register\n"
        "NAME adds the result to the registry for MODELFLEET_EMBEDDING_MODEL=models:/NAME@...\n\n"
        "  modelfleet embed --data pairs.csv --held-out pairs_test.csv --output-dir runs/emb",
    )
    parser.add_argument("--data", required=True, help="training pairs (.csv/.jsonl)")
    parser.add_argument("--held-out", required=True, help="held-out pairs (.csv/.jsonl)")
    parser.add_argument("--output-dir", default="runs/embedding")
    parser.add_argument("--model", default=None, help="base model (default: packaged MiniLM)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--register", metavar="NAME", help="register the model under NAME")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from modelfleet_toolkit.embed import fine_tune, load_pairs

    try:
        train, held = load_pairs(args.data), load_pairs(args.held_out)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    res = fine_tune(
        train, held, Path(args.output_dir), base=args.model, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
    )  # fmt: skip
    result: dict[str, Any] = {"output_dir": str(res.output_dir), "before": res.before,
                              "after": res.after}  # fmt: skip
    if args.register:
        from modelfleet_toolkit import registry

        reg = registry.register(res.output_dir, args.register)
        result["registered"] = {"name": reg.name, "version": reg.version}
    if args.json:
        console.emit_json(result)
    else:
        console.table(
            f"held-out pairs ({len(held)}): before and after fine-tuning",
            ["metric", "before", "after"],
            [[k, res.before[k], res.after[k]] for k in res.after],
        )
    return 0
