"""The values schema of the toolkit Jobs' configs is the toolkit's own pydantic models' schema.

``toolkit.training.config`` is a ``TrainConfig`` and ``toolkit.tuning.config`` a ``TuneConfig``:
their JSON schemas sit in values.schema.json's ``$defs``, so `helm install` names a misspelt
setting before a pod ever starts. After changing a config model, regenerate them:

    PYTHONPATH=shared:. python -m tests.charts.toolkit_schema
"""

from __future__ import annotations

import json
from typing import Any

from tests.charts.helm import CHART_DIR

SCHEMA_FILE = CHART_DIR / "values.schema.json"


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def config_defs() -> dict[str, Any]:
    """``$defs`` entries: TrainConfig, ParamSpec, TuneConfig (refs as #/$defs/<Model>)."""
    from modelfleet_toolkit.tuneconfig import TuneConfig

    schema = _strip_titles(TuneConfig.model_json_schema())
    defs: dict[str, Any] = schema.pop("$defs")
    return {**defs, "TuneConfig": schema}


def main() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    schema["$defs"].update(config_defs())
    SCHEMA_FILE.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
