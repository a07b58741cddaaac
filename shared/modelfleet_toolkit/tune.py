"""Hyperparameter search with Optuna: grid, random or TPE sampling, median or Hyperband pruning.

Each trial is a real training run (:func:`modelfleet_toolkit.train.train`) that reports its
validation metric after every evaluation through ``trial.report``/``trial.should_prune``. Trials
live in Optuna storage, so a killed search resumes and several workers share one study: a SQLite
file locally, the fleet's Redis (Optuna's JournalStorage) or a database in Kubernetes. Each worker
stops once the study holds ``n_trials`` finished trials (Optuna's ``MaxTrialsCallback``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from modelfleet_toolkit import plots, tracking
from modelfleet_toolkit.config import ConfigError
from modelfleet_toolkit.tuneconfig import ParamSpec, TuneConfig


class OptunaReport(TrainerCallback):
    """Reports each evaluation to the trial and stops the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.reports = 0

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        import optuna

        if not metrics or self.metric not in metrics or state.global_step == 0:
            return
        # Steps count evaluations from 1: the pruners' resources (Hyperband's rungs) are then
        # "evaluations done", which is epochs with the default per-epoch evaluation.
        self.reports += 1
        self.trial.report(float(metrics[self.metric]), step=self.reports)
        self.trial.set_user_attr("epochs", float(state.epoch or 0.0))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {state.epoch:.2f} epochs")


def storage(url: str | None) -> Any:
    """Optuna storage for a URL: None (memory), redis://, journal:FILE or any SQLAlchemy URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend, JournalStorage

    if url is None:
        return None
    if url.startswith(("redis://", "rediss://")):
        # Experimental since Optuna 3.1 and the way to share a study through a Redis; the
        # warning on every worker's start says nothing a user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return JournalStorage(JournalRedisBackend(url))
    if url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(url)


def _sampler(cfg: TuneConfig) -> Any:
    import optuna

    if cfg.sampler == "tpe":
        # Optuna's default of 10 random start-up trials would make a 10-trial TPE study a
        # random search; a third of the budget (2 to 10) leaves TPE trials to model.
        startup = cfg.startup_trials or max(2, min(10, cfg.n_trials // 3))
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=startup)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    grid: dict[str, list[Any]] = {}
    for name, spec in cfg.search_space.items():
        values = spec.grid_values()
        if values is None:
            raise ConfigError(f"grid sampler: search_space.{name} needs choices or grid values")
        grid[name] = values
    return optuna.samplers.GridSampler(grid, seed=cfg.seed)


def _pruner(cfg: TuneConfig) -> Any:
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _suggest(trial: Any, name: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    assert spec.low is not None and spec.high is not None  # checked by ParamSpec
    if spec.type == "int":
        return trial.suggest_int(
            name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
        )
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def worker_id() -> str:
    """Which worker ran a trial: host (a Kubernetes pod's name) and process id, so a study shared
    by N worker pods shows each pod's share."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _objective(cfg: TuneConfig, out: Path) -> Callable[[Any], float]:
    from modelfleet_toolkit.train import train

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in cfg.search_space.items()}
        trial_dir = out / f"trial-{trial.number}"
        run_cfg = cfg.train.model_copy(
            update={
                **params,
                "output_dir": str(trial_dir),
                "run_name": f"trial-{trial.number}",
                "resume": None,
            }
        )
        trial.set_user_attr("planned_epochs", float(run_cfg.epochs))
        trial.set_user_attr("worker", worker_id())
        try:
            result = train(run_cfg, callbacks=[OptunaReport(trial, run_cfg.metric)])
        finally:
            if not cfg.keep_models:
                shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
        metric = run_cfg.metric if run_cfg.metric.startswith("eval_") else f"eval_{run_cfg.metric}"
        trial.set_user_attr("epochs", result.metrics.get("epoch", run_cfg.epochs))
        trial.set_user_attr("output_dir", str(trial_dir))
        return float(result.metrics[metric])

    return objective


def trials_table(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, epochs run, worker, parameters."""
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs": t.user_attrs.get("epochs"),
            "worker": t.user_attrs.get("worker"),
            "params": dict(t.params),
        }
        for t in study.trials
    ]


def summarize(study: Any, cfg: TuneConfig) -> dict[str, Any]:
    """Best parameters, the trials table and how many epochs pruning saved."""
    import optuna

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    saved = sum(
        max(
            0.0,
            float(t.user_attrs.get("planned_epochs", cfg.train.epochs))
            - float(t.user_attrs.get("epochs", 0.0)),
        )
        for t in pruned
    )
    result: dict[str, Any] = {
        "study": study.study_name,
        "sampler": cfg.sampler,
        "pruner": cfg.pruner,
        "complete": len(finished),
        "pruned": len(pruned),
        "epochs_saved_by_pruning": saved,
        "trials": trials_table(study),
    }
    if finished:
        best = study.best_trial
        result.update(best_value=best.value, best_params=dict(best.params), best_trial=best.number)
        # Trials needed to first reach the best value (the TPE-versus-grid comparison).
        values = [t.value for t in sorted(finished, key=lambda t: t.number)]
        target = best.value
        result["trials_to_best"] = next(i + 1 for i, v in enumerate(values) if v == target)
    return result


def _plots(study: Any, cfg: TuneConfig, out: Path) -> list[Path]:
    import optuna

    made = []
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if values:
        made.append(
            plots.optimisation_history(
                values, cfg.direction == "maximize", out / "optimization_history.png"
            )
        )
    # Importances need at least two finished trials with varied parameters.
    try:
        with warnings.catch_warnings():
            # "importances will be equal" when few trials differ: true, and harmless in a plot.
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        importances = {}
    if importances:
        made.append(plots.param_importance(importances, out / "param_importances.png"))
    return made


def tune(
    cfg: TuneConfig, on_trial: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) the study until it holds ``n_trials`` finished trials; summary dict."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage(cfg.storage),
        sampler=_sampler(cfg),
        pruner=_pruner(cfg),
        direction=cfg.direction,
        load_if_exists=True,
    )
    done = (TrialState.COMPLETE, TrialState.PRUNED)

    def report(study: Any, trial: Any) -> None:
        if on_trial:
            on_trial(
                {
                    "number": trial.number,
                    "state": trial.state.name,
                    "value": trial.value,
                    "params": trial.params,
                }
            )

    params = {
        "sampler": cfg.sampler,
        "pruner": cfg.pruner,
        "n_trials": cfg.n_trials,
        "study": cfg.study_name,
    }
    with tracking.run(
        cfg.train.experiment, f"tune-{cfg.study_name}", params, enabled=cfg.train.track
    ) as run_id:
        remaining = cfg.n_trials - len(study.get_trials(deepcopy=False, states=done))
        if remaining > 0:
            study.optimize(
                _objective(cfg, out),
                n_trials=remaining,
                timeout=cfg.timeout,
                callbacks=[MaxTrialsCallback(cfg.n_trials, states=done), report],
                catch=(),
            )
        result = summarize(study, cfg)
        result["run_id"] = run_id
        made = _plots(study, cfg, out)
        (out / "trials.json").write_text(json.dumps(result, indent=2, default=str) + "\n", "utf-8")
        if cfg.train.track:
            if "best_value" in result:
                tracking.log_metrics(
                    {
                        "best_value": result["best_value"],
                        "epochs_saved_by_pruning": result["epochs_saved_by_pruning"],
                    }
                )
                tracking.log_params({f"best_{k}": v for k, v in result["best_params"].items()})
            for path in [*made, out / "trials.json"]:
                tracking.log_artifact(path)
    result["plots"] = [str(p) for p in made]
    return result
