"""``make tune-compare``: TPE against grid search, and the epochs pruning saves.

One search space, the intent task's shipped examples (MiniLM, 32 tokens, a stratified 25%
validation split), three studies: grid over the space's grid values (every point), TPE with the
same number of trials over the continuous space, and TPE with median pruning. Reports the trials
TPE needed to reach the grid's best validation accuracy and the epochs pruning did not run.

    python -m tests.perf.tune_compare              # JSON, merged into bench-results.json
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tests.perf.common import merge_results
from tests.toolkit.conftest import shipped_rows, write_csv

EPOCHS = float(os.environ.get("TUNE_EPOCHS", "3"))
TASK = os.environ.get("TUNE_TASK", "intent")
PRUNING = os.environ.get("TUNE_PRUNING", "1") == "1"


def run() -> dict[str, Any]:
    from modelfleet_toolkit.config import TrainConfig
    from modelfleet_toolkit.tune import tune
    from modelfleet_toolkit.tuneconfig import ParamSpec, TuneConfig

    space = {
        "learning_rate": ParamSpec(type="float", low=1e-5, high=3e-4, log=True,
                                   grid=[1e-5, 3e-5, 1e-4, 3e-4]),
        "warmup_ratio": ParamSpec(type="float", low=0.0, high=0.3, grid=[0.0, 0.2]),
    }  # fmt: skip
    n_grid = 8
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        data = write_csv(tmp / "d.csv", shipped_rows(TASK, 1000))
        base = TrainConfig(
            data=str(data), eval_fraction=0.25, epochs=EPOCHS, batch_size=16, max_length=32,
            track=False, save_total_limit=1, sampler="random",
        )  # fmt: skip

        def study(name: str, sampler: str, pruner: str) -> dict[str, Any]:
            cfg = TuneConfig(
                train=base, search_space=space, sampler=sampler, pruner=pruner,  # type: ignore[arg-type]
                n_trials=n_grid, storage=None, study_name=name, output_dir=str(tmp / name),
            )  # fmt: skip
            return tune(cfg)

        grid = study("grid", "grid", "none")
        tpe = study("tpe", "tpe", "none")
        pruned = study("tpe-pruned", "tpe", "median") if PRUNING else None
    target = grid["best_value"]
    tpe_values = [t["value"] for t in tpe["trials"]]
    reached = next((i + 1 for i, v in enumerate(tpe_values) if v is not None and v >= target), None)
    result: dict[str, Any] = {
        "tune_tpe_vs_grid": {
            "grid_best_accuracy": round(target, 4),
            "grid_trials_to_best": grid["trials_to_best"],
            "grid_trials": n_grid,
            "tpe_best_accuracy": round(tpe["best_value"], 4),
            "tpe_trials_to_reach_grid_best": reached,
            "epochs_planned_per_trial": EPOCHS,
            "target": "TPE reaches the grid's best in fewer trials",
            "met": reached is not None and reached < grid["trials_to_best"],
        },
    }
    if pruned is None:
        return result
    result |= {
        "tune_pruning": {
            "pruned_trials": pruned["pruned"],
            "epochs_saved_by_pruning": pruned["epochs_saved_by_pruning"],
            "epochs_without_pruning": EPOCHS * n_grid,
            "best_accuracy_with_pruning": round(pruned["best_value"], 4),
            "target": "pruning saves epochs",
            "met": pruned["epochs_saved_by_pruning"] > 0,
        },
    }
    return result


def main() -> int:
    results = run()
    merge_results(results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
