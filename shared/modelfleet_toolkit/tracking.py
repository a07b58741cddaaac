"""MLflow tracking: one run per command, nested runs for tuning trials.

Default store: ``sqlite:///mlflow.db`` in the working directory with artifacts in ``./mlartifacts``
(no server needed); ``MLFLOW_TRACKING_URI`` points the toolkit at any tracking server instead.
Imports of mlflow happen inside functions: importing it costs about a second.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or the local SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _experiment(name: str) -> str:
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    # A local SQLite store keeps artifacts beside it rather than in ./mlruns.
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path.cwd() / DEFAULT_ARTIFACTS).resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


@contextlib.contextmanager
def run(
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    enabled: bool = True,
) -> Iterator[str | None]:
    """An MLflow run (its id) around a command; ``enabled=False`` yields None and logs nothing."""
    if not enabled:
        yield None
        return
    import mlflow

    exp_id = _experiment(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=nested) as active:
        if params:
            log_params(params)
        if tags:
            mlflow.set_tags(dict(tags))
        yield str(active.info.run_id)


def log_params(params: Mapping[str, Any]) -> None:
    """Parameters of the active run; None becomes an empty string, values cut to MLflow's limit."""
    import mlflow

    mlflow.log_params({k: ("" if v is None else str(v)[:6000]) for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Numeric metrics of the active run (non-numbers skipped)."""
    import mlflow

    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """A file or directory into the active run's artifacts."""
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)


def active() -> bool:
    """Whether an MLflow run is active in this process."""
    import mlflow

    return mlflow.active_run() is not None
