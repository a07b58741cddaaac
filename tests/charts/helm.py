"""Render charts/modelfleet with the real Helm engine (helm-python-sdk binds Helm's Go SDK).

Renders are memoised per scenario: the chart tests ask for the same few scenarios many times and
the engine is the slow part.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "modelfleet"
RELEASE = "mf"
NAMESPACE = "fleet"
MODEL_SERVICES = ("llm", "embedding", "classification", "generation")
SERVICES = ("gateway", *MODEL_SERVICES)
PORTS = {
    "gateway": 8080,
    "llm": 3002,
    "embedding": 3003,
    "classification": 3004,
    "generation": 3005,
}
ENV_FILES = ("values-dev.yaml", "values-staging.yaml", "values-prod.yaml", "values-zh.yaml")
CI_FILES = tuple(sorted(p.name for p in (CHART_DIR / "ci").glob("*.yaml")))

# Every scenario the tests render: the defaults, each environment, each ci/ file on its own and
# the interesting ci/ files on top of prod (GPU + autoscaling + monitoring at once).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    **{env.removesuffix(".yaml"): (env,) for env in ENV_FILES},
    **{f"ci/{ci.removesuffix('-values.yaml')}": (f"ci/{ci}",) for ci in CI_FILES},
    "prod+keda": ("values-prod.yaml", "ci/keda-values.yaml"),
    "prod+external-redis": ("values-prod.yaml", "ci/external-redis-values.yaml"),
    "prod+llm-off": ("values-prod.yaml", "ci/llm-off-values.yaml"),
    "prod+zh": ("values-prod.yaml", "values-zh.yaml"),
    "dev+monitoring": ("values-dev.yaml", "ci/monitoring-values.yaml"),
}


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge like `helm -f a.yaml -f b.yaml`: maps merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_values(*files: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in files:
        values = deep_merge(values, yaml.safe_load((CHART_DIR / name).read_text()) or {})
    return values


@dataclass(frozen=True)
class Rendered:
    """A rendered release: the manifests by kind/name, and NOTES.txt."""

    docs: tuple[dict[str, Any], ...]
    notes: str

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        raise KeyError(
            f"no {kind} {name!r}; have {[d['metadata']['name'] for d in self.kinds(kind)]}"
        )

    def workloads(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet")]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for w in self.workloads():
            yield f"{w['kind']}/{w['metadata']['name']}", w["spec"]["template"]["spec"]
        for j in self.kinds("Job"):
            yield f"Job/{j['metadata']['name']}", j["spec"]["template"]["spec"]
        for p in self.kinds("Pod"):
            yield f"Pod/{p['metadata']['name']}", p["spec"]


def render_values(values: Mapping[str, Any]) -> Rendered:
    """Render with explicit values (raises helm_python.HelmError on schema or template failure)."""
    out = chart().render(values=dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(tuple(docs), notes)


@functools.cache
def _render_cached(frozen: str) -> Rendered:
    return render_values(json.loads(frozen))


def render(*files: str, **overrides: Any) -> Rendered:
    """Render the chart with values files (relative to the chart) and dotted-path overrides."""
    values = load_values(*files)
    for dotted, value in overrides.items():
        values = deep_merge(values, _nest(dotted.split("__"), value))
    return _render_cached(json.dumps(values, sort_keys=True))


def render_scenario(name: str) -> Rendered:
    return render(*SCENARIOS[name])


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    result: dict[str, Any] = out
    return result


def fullname() -> str:
    return f"{RELEASE}-modelfleet"


def component_name(component: str) -> str:
    return f"{fullname()}-{component}"


def containers(pod_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
