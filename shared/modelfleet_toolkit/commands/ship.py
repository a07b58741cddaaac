"""``modelfleet ship``: CSV -> trained, evaluated, exported, registered, gated promotion."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelfleet import flavours as fl
from modelfleet_toolkit import console
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.ship import ship


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "ship",
        "train, evaluate, export, register and promote a classifier if it beats the champion",
        "From a labelled CSV to a registered version: a held-out split is set aside, the model\n"
        "is trained on the rest, exported to its flavours (parity-checked), registered, and\n"
        "promoted to champion only when it beats the current champion on the same held-out\n"
        "data (--force overrides). Services on models:/<name>@champion pick it up.\n\n"
        "  modelfleet ship --task intent --data intent.csv",
    )
    parser.add_argument("--task", required=True, help="task name the service exposes")
    parser.add_argument("--data", required=True, help="labelled data (.csv/.jsonl)")
    parser.add_argument("--name", help="registered model name (default: <task>-clf)")
    parser.add_argument("--work-dir", default=None, help="default: runs/ship-<name>")
    parser.add_argument("--held-out", type=float, default=0.2, help="held-out fraction")
    parser.add_argument("--flavours", default=",".join(fl.FLAVOURS))
    parser.add_argument("--force", action="store_true", help="promote even if it loses")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--model", default=None, help="base encoder (default: packaged MiniLM)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-track", action="store_true", help="do not log the training run")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "model": args.model,
        }.items()
        if v is not None
    }
    if args.no_track:
        overrides["track"] = False
    name = args.name or f"{args.task}-clf"
    res = ship(
        args.task, args.data, name=name,
        work_dir=Path(args.work_dir or f"runs/ship-{name}"), train_overrides=overrides,
        held_out_fraction=args.held_out,
        flavours=[f.strip() for f in args.flavours.split(",") if f.strip()],
        force=args.force, seed=args.seed,
    )  # fmt: skip
    result = {
        "name": res.name, "version": res.version, "promoted": res.promoted,
        "reason": res.reason, "held_out": res.held_out, "champion": res.champion,
        "run_id": res.run_id, "model_dir": str(res.model_dir), "seconds": res.seconds,
        "flavours": res.flavours,
    }  # fmt: skip
    if args.json:
        console.emit_json(result)
        return 0
    champ = res.champion
    console.table(
        f"{res.name}: new v{res.version} against the champion on the same held-out set",
        ["", f"new v{res.version}", f"champion v{champ['version']}" if champ else "champion"],
        [["f1_macro", res.held_out["f1_macro"], champ["f1_macro"] if champ else "-"],
         ["accuracy", res.held_out["accuracy"], champ["accuracy"] if champ else "-"]],
    )  # fmt: skip
    verdict = "PROMOTED to champion" if res.promoted else "not promoted (challenger)"
    console.err.print(f"v{res.version} {verdict}: {res.reason}")
    return 0
