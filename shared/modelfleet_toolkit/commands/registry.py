"""``modelfleet registry``: registered model versions and the aliases that say what serves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelfleet_toolkit import console, registry
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.data import DataError


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "registry",
        "list, show, register, promote and roll back registered models (MLflow registry)",
        "Versions live in MLflow's model registry (MLFLOW_TRACKING_URI, default\n"
        "sqlite:///mlflow.db). Services follow an alias: MODEL=models:/<name>@champion.\n\n"
        "  modelfleet registry list\n"
        "  modelfleet registry show intent-clf\n"
        "  modelfleet registry register runs/model --name intent-clf --task intent\n"
        "  modelfleet registry promote intent-clf 3          # champion -> v3\n"
        "  modelfleet registry rollback intent-clf           # champion -> the one before",
    )
    parser.add_argument("action", choices=["list", "show", "register", "promote", "rollback"])
    parser.add_argument("target", nargs="?", help="model name (model dir for register)")
    parser.add_argument("version", nargs="?", help="version to promote")
    parser.add_argument("--name", help="register: the registered model's name")
    parser.add_argument("--task", help="register: the task name the service exposes")
    parser.add_argument("--run-id", help="register: the training run (parent run)")
    parser.add_argument("--alias", default=registry.CHAMPION, choices=registry.ALIASES)
    parser.add_argument("--reason", default="", help="promote: recorded in the alias history")
    parser.set_defaults(handler=run)


def _need(value: str | None, what: str) -> str:
    if not value:
        raise DataError(f"give {what}")
    return value


def _history(name: str, entries: list[dict[str, Any]]) -> None:
    console.table(
        f"alias history of {name}",
        ["#", "at", "alias", "version", "previous", "action", "reason"],
        [[h["seq"], h["at"], h["alias"], f"v{h['version']}",
          f"v{h['previous']}" if h["previous"] else "-", h["action"], h["reason"]]
         for h in entries],
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except registry.RegistryError as exc:
        raise DataError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    result: dict[str, Any]
    if args.action == "list":
        models = registry.list_models()
        result = {"models": models}
        if not args.json:
            console.table("registered models", ["name", "task", "versions", "latest", "aliases"],
                          [[m["name"], m["task"], m["versions"], m["latest"],
                            ", ".join(f"{a}=v{v}" for a, v in m["aliases"].items())]
                           for m in models])  # fmt: skip
    elif args.action == "show":
        result = registry.show(_need(args.target, "a model name"))
        if not args.json:
            console.table(
                f"versions of {result['name']}",
                ["version", "aliases", "f1_macro", "accuracy", "data", "flavours in budget"],
                [[v["version"], ", ".join(v["aliases"]), v["metrics"].get("f1_macro", "-"),
                  v["metrics"].get("accuracy", "-"), (v["data_fingerprint"] or "-")[:12],
                  ", ".join(k for k, f in v["flavours"].items() if f.get("within_budget"))]
                 for v in result["versions"]],
            )  # fmt: skip
            _history(result["name"], result["history"])
    elif args.action == "register":
        model_dir = Path(_need(args.target, "a model directory"))
        tags = {"task_override": args.task} if args.task else None
        if args.task:
            _set_task(model_dir, args.task)
        reg = registry.register(
            model_dir, _need(args.name, "--name"), parent_run_id=args.run_id, extra_tags=tags
        )
        result = {"name": reg.name, "version": reg.version, "run_id": reg.run_id,
                  "source": reg.source}  # fmt: skip
        if not args.json:
            console.key_values(f"registered {reg.name} v{reg.version}", result)
    elif args.action == "promote":
        name = _need(args.target, "a model name")
        result = registry.promote(name, _need(args.version, "a version"), args.alias, args.reason)
        if not args.json:
            _history(name, registry.history(name))
    else:
        name = _need(args.target, "a model name")
        result = registry.rollback(name, args.alias)
        if not args.json:
            _history(name, registry.history(name))
    if args.json:
        console.emit_json(result)
    return 0


def _set_task(model_dir: Path, task: str) -> None:
    import json

    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["task"] = task
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False))
