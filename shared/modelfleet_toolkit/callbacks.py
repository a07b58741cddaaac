"""Trainer callbacks for the toolkit's cross-cutting behaviour: progress, MLflow, trial reports.

Early stopping is transformers' own ``EarlyStoppingCallback``; these add what it lacks.
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from modelfleet_toolkit import tracking
from modelfleet_toolkit.console import err


class RichProgress(TrainerCallback):
    """A rich progress bar over optimiser steps (on stderr, main process only)."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, info=""
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if self.progress is not None and logs:
            shown = {k: v for k, v in logs.items() if k in ("loss", "eval_loss", "eval_accuracy")}
            info = " ".join(f"{k}={v:.4f}" for k, v in shown.items())
            if info:
                self.progress.update(self.task, info=info)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MlflowMetrics(TrainerCallback):
    """Every logged loss, learning rate and eval metric into the active MLflow run, per step."""

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if logs and state.is_world_process_zero and tracking.active():
            tracking.log_metrics(
                {k.replace("/", "_"): v for k, v in logs.items()}, step=state.global_step
            )


class StopAtStep(TrainerCallback):
    """Stop (after the step's checkpoint) at ``step``: an interrupted run, for resume checks."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
