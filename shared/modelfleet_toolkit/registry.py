"""Versions of trained models in MLflow's model registry, and the aliases that say what serves.

The registry is the tracking store itself (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db``
in the working directory, artifacts beside it in ``./mlartifacts``). A version carries:

- its artifacts: the whole model directory (weights, tokenizer, model card, exported flavours),
  logged under ``model/`` of the training run when there is one (the *parent run*), else of a
  registration run;
- tags: task, labels, data fingerprint, held-out metrics, the flavours with their parity
  figures, the parent run.

Aliases ``champion`` (what the fleet serves) and ``challenger`` (a candidate) are MLflow aliases.
MLflow keeps only where an alias points now, so every move is also written as an append-only
tag on the registered model, ``modelfleet.alias.<seq>`` = JSON ``{alias, version, previous, at,
action, reason}``; :func:`history` reads them back and :func:`rollback` uses them.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.flavours import model_card

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)
EXPERIMENT = "modelfleet-registry"
DEFAULT_URI = "sqlite:///mlflow.db"
_HISTORY = "modelfleet.alias."


class RegistryError(ValueError):
    """A registry request that cannot be done (unknown model, version, nothing to roll back to)."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def client() -> Any:
    from mlflow import MlflowClient

    uri = tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(c: Any) -> str:
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):  # a local store keeps its artifacts beside the database
        db = Path(uri.removeprefix("sqlite:///"))
        location = (db.resolve().parent / "mlartifacts").as_uri()
    return str(c.create_experiment(EXPERIMENT, artifact_location=location))


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    source: str


def register(
    model_dir: Path,
    name: str,
    *,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Registered:
    """Log ``model_dir`` as artifacts and create a new version of registered model ``name``."""
    c = client()
    card = model_card(model_dir)
    if not card:
        raise RegistryError(f"{model_dir} has no model_card.json; is it a trained model dir?")
    if parent_run_id:
        run_id = parent_run_id
    else:
        run = c.create_run(_experiment_id(c), run_name=f"register {name}")
        run_id = run.info.run_id
        c.set_tag(run_id, "modelfleet.command", "registry register")
        for k, v in (card.get("metrics") or {}).items():
            if isinstance(v, int | float):
                # MLflow metric names take no '@' (recall@5): map such characters to '_'
                c.log_metric(run_id, re.sub(r"[^\w\-. /]", "_", f"held_out_{k}"), float(v))
        c.set_terminated(run_id)
    c.log_artifacts(run_id, str(model_dir), artifact_path="model")
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    flavours = {
        n: {
            k: f.get(k)
            for k in (
                "agreement",
                "f1_delta",
                "p50_ms_batch1",
                "throughput_batch32",
                "within_budget",
            )
        }
        for n, f in (card.get("flavours") or {}).items()
    }
    data = card.get("data") or {}
    tags = {
        "task": str(card.get("task", "")),
        "labels": json.dumps(card.get("labels") or []),
        "data_fingerprint": str(data.get("fingerprint", "")),
        "metrics": json.dumps(card.get("metrics") or {}),
        "flavours": json.dumps(flavours),
        "parent_run_id": run_id,
        "base_model": str(card.get("base_model", "")),
        **(extra_tags or {}),
    }
    try:
        c.get_registered_model(name)
    except Exception:
        c.create_registered_model(name, tags={"task": tags["task"]})
    mv = c.create_model_version(name, source, run_id=run_id, tags=tags)
    return Registered(name, str(mv.version), run_id, source)


def _check_version(c: Any, name: str, version: str) -> None:
    try:
        c.get_model_version(name, str(version))
    except Exception:
        raise RegistryError(f"model {name!r} has no version {version}") from None


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None."""
    c = client()
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def set_alias(name: str, alias: str, version: str, action: str, reason: str = "") -> dict[str, Any]:
    """Point ``alias`` at ``version`` and append the move to the alias history."""
    c = client()
    _check_version(c, name, version)
    previous = alias_version(name, alias)
    c.set_registered_model_alias(name, alias, str(version))
    seq = len(history(name)) + 1
    entry = {
        "seq": seq, "alias": alias, "version": str(version), "previous": previous,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": action,
        "reason": reason,
    }  # fmt: skip
    c.set_registered_model_tag(name, f"{_HISTORY}{seq:06d}", json.dumps(entry))
    return entry


def promote(name: str, version: str, alias: str = CHAMPION, reason: str = "") -> dict[str, Any]:
    return set_alias(name, alias, version, "promote", reason)


def rollback(name: str, alias: str = CHAMPION) -> dict[str, Any]:
    """Point ``alias`` back at the version it held before its current one.

    The history replays as a stack: a promotion pushes, a rollback pops, so a second rollback
    goes further back instead of undoing the first.
    """
    stack: list[str] = []
    for h in history(name):
        if h["alias"] != alias:
            continue
        if h["action"] == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(h["version"])
    if len(stack) < 2:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to")
    return set_alias(name, alias, stack[-2], "rollback", f"from v{stack[-1]}")


def history(name: str) -> list[dict[str, Any]]:
    """Every alias move of ``name``, oldest first."""
    c = client()
    try:
        tags = c.get_registered_model(name).tags
    except Exception:
        raise RegistryError(f"no registered model {name!r}") from None
    keys = sorted(k for k in tags if k.startswith(_HISTORY))
    return [json.loads(tags[k]) for k in keys]


def list_models() -> list[dict[str, Any]]:
    c = client()
    out = []
    for rm in c.search_registered_models():
        versions = c.search_model_versions(f"name='{rm.name}'")
        out.append({
            "name": rm.name, "task": rm.tags.get("task", ""),
            "versions": len(versions),
            "latest": max((int(v.version) for v in versions), default=None),
            "aliases": {str(a): str(v) for a, v in (rm.aliases or {}).items()},
        })  # fmt: skip
    return out


def show(name: str) -> dict[str, Any]:
    c = client()
    try:
        rm = c.get_registered_model(name)
    except Exception:
        raise RegistryError(f"no registered model {name!r}") from None
    versions = []
    for v in sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        t = v.tags
        versions.append({
            "version": str(v.version), "run_id": v.run_id, "source": v.source,
            "aliases": list(v.aliases or []), "data_fingerprint": t.get("data_fingerprint"),
            "metrics": json.loads(t.get("metrics", "{}")),
            "flavours": json.loads(t.get("flavours", "{}")),
            "created": v.creation_timestamp,
        })  # fmt: skip
    aliases = {str(a): str(v) for a, v in (rm.aliases or {}).items()}
    return {"name": name, "aliases": aliases, "versions": versions, "history": history(name)}
