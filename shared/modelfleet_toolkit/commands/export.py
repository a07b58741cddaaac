"""``modelfleet export``: a trained model's serving flavours, each checked against float."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelfleet import flavours as fl
from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.data import DataError, clean, load_examples
from modelfleet_toolkit.export import MAX_F1_DROP, MIN_AGREEMENT, export


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "export",
        "export a trained model to float / int8 / ONNX flavours and check parity",
        "Write the flavours under MODEL_DIR/flavours, measure each against float on held-out\n"
        "data (label agreement, macro-F1 delta, p50 latency at batch 1, throughput at batch 32)\n"
        "side by side, and record the results in MODEL_DIR/model_card.json.\n\n"
        "  modelfleet export runs/model --data held_out.csv --calibration-data train.csv",
    )
    parser.add_argument("model_dir", help="a model directory written by `modelfleet train`")
    parser.add_argument("--data", required=True, help="held-out labelled data (.csv/.jsonl)")
    parser.add_argument("--calibration-data", help="training texts for static int8 calibration")
    parser.add_argument("--calibration-rows", type=int, default=256, help="rows used (default 256)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument(
        "--flavours", default=",".join(fl.FLAVOURS), help="comma-separated (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (median kept)")
    parser.add_argument(
        "--latency-samples", type=int, default=32, help="batch-1 calls per flavour and round"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for every flavour (0: defaults)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        raise DataError(f"{model_dir} is not a model directory (no config.json)")
    held = clean(load_examples(args.data, args.text_column, args.label_column))
    wanted = [f.strip() for f in args.flavours.split(",") if f.strip()]
    calibration = None
    if args.calibration_data:
        cal = load_examples(args.calibration_data, args.text_column, args.label_column)
        calibration = clean(cal).texts[: args.calibration_rows]
    elif fl.ONNX_INT8_STATIC in wanted:
        wanted.remove(fl.ONNX_INT8_STATIC)
        console.err.print("onnx-int8-static skipped: it needs --calibration-data")
    try:
        reports = export(
            model_dir, held.texts, held.labels, wanted=wanted, calibration=calibration,
            held_out_name=str(args.data), rounds=args.rounds,
            latency_samples=args.latency_samples, threads=args.threads,
        )  # fmt: skip
    except ValueError as exc:
        raise DataError(str(exc)) from None
    rows = [vars(r) for r in reports.values()]
    if args.json:
        console.emit_json({"model_dir": str(model_dir), "flavours": rows})
    else:
        console.table(
            f"flavours of {model_dir} against float on {len(held)} held-out rows "
            f"(budget: agreement >= {MIN_AGREEMENT}, F1 drop <= {MAX_F1_DROP})",
            ["flavour", "agreement", "macro-F1", "F1 delta", "p50 ms (b=1)", "texts/s (b=32)",
             "MB", "within budget"],
            [[r["flavour"], r["agreement"], r["f1_macro"], r["f1_delta"], r["p50_ms_batch1"],
              r["throughput_batch32"], r["size_mb"] if r["size_mb"] is not None else "-",
              "yes" if r["within_budget"] else "NO"] for r in rows],
        )  # fmt: skip
    return 0
