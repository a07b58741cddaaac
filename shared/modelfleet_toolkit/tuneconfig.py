"""The ``tune`` configuration: a training config, a search space and the study's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelfleet_toolkit.config import TrainConfig


class ParamSpec(BaseModel):
    """One searched parameter: a float/int range (optionally log) or a list of choices.

    ``grid`` lists the values the grid sampler tries for a range (choices are their own grid).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs choices")
        if self.type != "categorical" and (self.low is None or self.high is None):
            raise ValueError(f"a {self.type} parameter needs low and high")
        return self

    def grid_values(self) -> list[Any] | None:
        """The values a grid search tries, if this spec names them."""
        if self.choices:
            return list(self.choices)
        if self.grid:
            return list(self.grid)
        if self.type == "int" and self.low is not None and self.high is not None:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        return None


def _default_space() -> dict[str, ParamSpec]:
    """The design document's space: log-uniform LR, batch size, decay, warmup, dropout, epochs."""
    return {
        "learning_rate": ParamSpec(
            type="float", low=1e-5, high=3e-4, log=True, grid=[2e-5, 5e-5, 1e-4, 2e-4]
        ),
        "batch_size": ParamSpec(type="categorical", choices=[8, 16, 32]),
        "weight_decay": ParamSpec(type="float", low=0.0, high=0.1, grid=[0.0, 0.01]),
        "warmup_ratio": ParamSpec(type="float", low=0.0, high=0.2, grid=[0.0, 0.1]),
        "dropout": ParamSpec(type="float", low=0.0, high=0.3, grid=[0.1]),
    }


class TuneConfig(BaseModel):
    """Everything ``modelfleet tune`` needs; ``train`` holds the fixed training settings."""

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig = Field(default_factory=TrainConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=_default_space)
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="trial pruner")
    n_trials: int = Field(10, gt=0, description="finished trials the study needs (all workers)")
    timeout: float | None = Field(None, gt=0, description="stop this worker after N seconds")
    storage: str | None = Field(
        "sqlite:///optuna.db",
        description=(
            "sqlite:///f.db, a database URL, redis://host:6379/0 or journal:FILE "
            "($MODELFLEET_TUNE_STORAGE overrides it, --storage overrides both)"
        ),
    )
    study_name: str = Field("modelfleet", description="study to create or resume")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="of the metric")
    seed: int = Field(42, description="sampler seed")
    startup_trials: int | None = Field(
        None, ge=1, description="random trials before TPE models (default: n_trials // 3, 2-10)"
    )
    output_dir: str = Field("runs/tune", description="trial model dirs, plots, trials table")
    keep_models: bool = Field(False, description="keep every trial's model dir (else best only)")

    @model_validator(mode="after")
    def _known_params(self) -> TuneConfig:
        unknown = set(self.search_space) - set(TrainConfig.model_fields)
        if unknown:
            raise ValueError(f"search_space names no training setting: {sorted(unknown)}")
        return self
