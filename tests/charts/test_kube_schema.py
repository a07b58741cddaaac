"""Every rendered manifest of a core kind validates against the Kubernetes API schemas; the custom
resources (no schema shipped) are checked for the fields their operators require."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest

from tests.charts.helm import SCENARIOS, render_scenario

CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
# The chart's floor (Chart.yaml kubeVersion) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


def _unique_core_docs() -> list[tuple[str, dict[str, Any]]]:
    # Many scenarios render identical Services and Secrets: validate each distinct manifest once.
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        for doc in render_scenario(scenario).docs:
            if doc["kind"] in CUSTOM_KINDS:
                continue
            key = json.dumps(doc, sort_keys=True)
            seen.setdefault(key, (f"{scenario}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return list(seen.values())


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_core_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    assert version >= "1.30"
    failures = []
    for where, doc in _unique_core_docs():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(
                f"{where}: {doc['apiVersion']} {doc['kind']} has no schema in {version}"
            )
    assert not failures, "\n".join(failures)


def _custom(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{s}:{d['metadata']['name']}", d)
        for s in SCENARIOS
        for d in render_scenario(s).docs
        if d["kind"] == kind
    ]


def test_service_monitors_have_operator_required_fields() -> None:
    monitors = _custom("ServiceMonitor")
    assert monitors
    for where, sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1", where
        spec = sm["spec"]
        assert spec["selector"]["matchLabels"], where
        assert spec["namespaceSelector"]["matchNames"], where
        assert spec["endpoints"], where
        for ep in spec["endpoints"]:
            assert ep["port"] in ("http", "metrics") and ep["path"] == "/metrics", where
            assert DURATION.match(ep["interval"]) and DURATION.match(ep["scrapeTimeout"]), where
            # The fleet's own `service` label must win over the target's.
            # The fleet's own `service` label must win; the Redis exporter has none to keep.
            assert where.endswith("-redis") or ep["honorLabels"] is True, where


def test_prometheus_rules_have_operator_required_fields() -> None:
    rules = _custom("PrometheusRule")
    assert rules
    for where, pr in rules:
        assert pr["apiVersion"] == "monitoring.coreos.com/v1", where
        groups = pr["spec"]["groups"]
        assert groups and len({g["name"] for g in groups}) == len(groups), where
        for group in groups:
            assert group["rules"], where
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations",
                                     "keep_firing_for"}, where  # fmt: skip
                assert rule["alert"] and rule["expr"].strip(), where
                assert DURATION.match(rule["for"]), where
                assert rule["labels"]["severity"] in {"warning", "critical"}, where
                assert rule["annotations"]["summary"], where


def test_scaled_objects_have_operator_required_fields() -> None:
    objects = _custom("ScaledObject")
    assert objects
    for where, so in objects:
        assert so["apiVersion"] == "keda.sh/v1alpha1", where
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"], where
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], where
        assert spec["triggers"], where
        for trigger in spec["triggers"]:
            assert trigger["type"] in {"prometheus", "cpu"}, where
            meta = trigger["metadata"]
            if trigger["type"] == "prometheus":
                assert meta["serverAddress"].startswith("http"), where
                assert meta["query"] and isinstance(meta["threshold"], str), where
                float(meta["threshold"])
            else:
                assert trigger["metricType"] == "Utilization" and meta["value"].isdigit(), where
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0, where
