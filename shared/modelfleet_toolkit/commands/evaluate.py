"""``modelfleet evaluate``: score a model directory or a running service on labelled data."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelfleet_toolkit import console, tracking
from modelfleet_toolkit.commands.common import command_parser
from modelfleet_toolkit.config import ConfigError, add_flags, load_yaml, resolve

EXAMPLES = """examples:
  modelfleet evaluate --model runs/intent --data test.csv
  modelfleet evaluate --endpoint http://localhost:8080 --task intent --data test.csv
  modelfleet evaluate --endpoint http://localhost:8080 --labels a,b,c --data test.csv
  modelfleet evaluate --endpoint http://localhost:8080 --task summarize --data news.csv \\
      --text-column article --label-column summary
  modelfleet evaluate --predictions-column output --data outputs.csv --label-column reference
"""


class EvalConfig(BaseModel):
    """What ``modelfleet evaluate`` scores, on which data."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("", description="labelled data: .csv, .jsonl or a datasets directory")
    model: str | None = Field(None, description="a trained model directory to score in-process")
    endpoint: str | None = Field(None, description="base URL of a running service or gateway")
    task: str | None = Field(None, description="classification task (intent...) or summarize")
    labels: str | None = Field(None, description="comma-separated labels instead of a task")
    predictions_column: str | None = Field(None, description="score this column (generation)")
    text_column: str = Field("text", description="column holding the input text")
    label_column: str = Field("label", description="column holding the label / reference")
    kind: Literal["auto", "classification", "generation"] = Field("auto", description="metrics")
    clean: bool = Field(False, description="clean input text as train does")
    max_length: int = Field(128, gt=0, description="tokens per example (model dirs)")
    batch_size: int = Field(64, gt=0, description="examples per forward pass (model dirs)")
    output_dir: str = Field("runs/eval", description="where the PNG and JSON results go")
    track: bool = Field(True, description="log the run to MLflow")
    experiment: str = Field("modelfleet", description="MLflow experiment name")


def add_parser(subparsers: Any) -> None:
    parser = command_parser(
        subparsers,
        "evaluate",
        "score a model directory or a running service (P/R/F1, confusion matrix, ROUGE/BLEU)",
        "Classification: accuracy, precision/recall/F1 (macro, weighted, per class) and a\n"
        "confusion-matrix PNG. Generation: ROUGE-1/2/L, BLEU and embedding similarity.\n\n"
        + EXAMPLES,
    )
    add_flags(parser, EvalConfig)
    parser.set_defaults(handler=run)


def _generation(cfg: EvalConfig) -> dict[str, Any]:
    from modelfleet_toolkit.data import load_examples
    from modelfleet_toolkit.textmetrics import generation_metrics

    refs = load_examples(cfg.data, cfg.text_column, cfg.label_column)
    if cfg.predictions_column:
        preds = load_examples(cfg.data, cfg.predictions_column, cfg.label_column).texts
    elif cfg.endpoint:
        from modelfleet_toolkit.endpoint import summarize_endpoint

        preds = summarize_endpoint(cfg.endpoint, refs.texts)
    else:
        raise ConfigError("generation metrics need --endpoint or --predictions-column")
    result: dict[str, Any] = dict(generation_metrics(preds, refs.labels))
    result.update(rows=len(refs), data=cfg.data, endpoint=cfg.endpoint)
    return result


def evaluate_config(cfg: EvalConfig) -> dict[str, Any]:
    """The result dict for ``cfg`` (classification or generation)."""
    from modelfleet_toolkit.evaluate import evaluate_classifier, evaluate_endpoint

    if not cfg.data:
        raise ConfigError("no data: pass --data")
    generation = cfg.kind == "generation" or (
        cfg.kind == "auto" and (cfg.task == "summarize" or cfg.predictions_column is not None)
    )
    if generation:
        return _generation(cfg)
    if cfg.endpoint:
        target: str | list[str] | None = cfg.task or (
            [s.strip() for s in cfg.labels.split(",")] if cfg.labels else None
        )
        if not target:
            raise ConfigError("--endpoint needs --task or --labels")
        return evaluate_endpoint(
            cfg.endpoint,
            target,
            cfg.data,
            text_column=cfg.text_column,
            label_column=cfg.label_column,
            do_clean=cfg.clean,
            output_dir=cfg.output_dir,
        )
    if not cfg.model:
        raise ConfigError("pass --model DIR or --endpoint URL")
    return evaluate_classifier(
        cfg.model,
        cfg.data,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        do_clean=cfg.clean,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        output_dir=cfg.output_dir,
    )


def run(args: argparse.Namespace) -> int:
    cfg = resolve(EvalConfig, load_yaml(args.config), args)
    with tracking.run(cfg.experiment, "evaluate", cfg.model_dump(), enabled=cfg.track) as run_id:
        result = evaluate_config(cfg)
        if run_id:
            tracking.log_metrics(result)
            if result.get("confusion_matrix_png"):
                from pathlib import Path

                tracking.log_artifact(Path(result["confusion_matrix_png"]))
                tracking.log_artifact(Path(cfg.output_dir) / "evaluation.json")
    result["run_id"] = run_id
    if args.json:
        console.emit_json(result)
        return 0
    console.key_values(f"evaluation: {cfg.model or cfg.endpoint}", result)
    if "per_class" in result:
        console.table(
            "per class",
            ["label", "precision", "recall", "f1", "support"],
            [
                (k, v["precision"], v["recall"], v["f1"], v["support"])
                for k, v in result["per_class"].items()
            ],
        )
    return 0
