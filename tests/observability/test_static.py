"""The alert rules pass promtool, and the dashboards are well-formed and read only the contract's
metrics. (tests/observability/test_prometheus_live.py runs every query against real services.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.charts.helm import SCENARIOS, render_scenario
from tests.observability.queries import (
    CONTRACT_METRICS,
    DECODER_METRICS,
    GATEWAY_METRICS,
    GPU_METRICS,
    RULES_FILE,
    adapter_rules,
    alert_queries,
    alert_rules,
    dashboard_queries,
    dashboards,
    metric_names,
    panels,
    variable_queries,
)

PROMTOOL = shutil.which("promtool") or "promtool (missing: `make sysdeps` installs it)"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")


def test_promtool_checks_the_rules_file() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES_FILE)], capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_fire_the_alerts() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True,
        check=False, timeout=60, cwd=ALERTS_TEST.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_s_alerts_are_all_there() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "ModelfleetHighErrorRate", "ModelfleetHighLatencyP95", "ModelfleetBackendDown",
        "ModelfleetRedisDown", "ModelfleetCacheErrors", "ModelfleetQueueSaturated",
        "ModelfleetGPUMemoryHigh",
    } <= names  # fmt: skip
    p95 = next(r for r in alert_rules() if r["alert"] == "ModelfleetHighLatencyP95")
    assert "histogram_quantile(0.95" in p95["expr"] and p95["expr"].strip().endswith("> 0.2")


def test_only_contract_metrics_are_queried() -> None:
    for query in [*dashboard_queries(), *alert_queries()]:
        unknown = query.metrics - CONTRACT_METRICS
        assert not unknown, f"{query.source} reads metrics outside the contract: {unknown}"
    for uid, metric, _ in variable_queries():
        assert metric in CONTRACT_METRICS, uid


def test_dashboards_are_well_formed_for_grafana() -> None:
    boards = dashboards()
    assert set(boards) == {"fleet-overview.json", "service-detail.json", "gpu.json"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), (name, panel["title"])
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])


def test_dashboards_cover_what_the_issue_lists() -> None:
    boards = dashboards()

    def reads(board: str) -> set[str]:
        return {
            m for p in panels(boards[board]) for t in p["targets"] for m in metric_names(t["expr"])
        }

    overview = reads("fleet-overview.json")
    assert {
        "modelfleet_requests_total", "modelfleet_request_duration_seconds",
        "modelfleet_cache_requests_total", "modelfleet_fallbacks_total", "modelfleet_backend_up",
    } <= overview  # fmt: skip
    quantiles = " ".join(
        t["expr"] for p in panels(boards["fleet-overview.json"]) for t in p["targets"]
    )
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (service, le)" in quantiles
    detail = reads("service-detail.json")
    assert {
        "modelfleet_batch_size",
        "modelfleet_queue_depth",
        "modelfleet_input_tokens_total",
    } <= detail
    assert reads("gpu.json") == GPU_METRICS
    assert detail >= DECODER_METRICS and overview >= GATEWAY_METRICS


def test_every_hpa_custom_metric_is_served_by_the_adapter_rules() -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert served <= CONTRACT_METRICS
    for rule in adapter_rules():
        assert metric_names(rule["seriesQuery"]) == {rule["name"]["as"]}
    for scenario in SCENARIOS:
        for hpa in render_scenario(scenario).kinds("HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    name = metric["pods"]["metric"]["name"]
                    assert name in served, f"{scenario}: HPA metric {name} has no adapter rule"


def test_every_alert_has_a_strippable_threshold_and_documentation() -> None:
    queries = alert_queries()
    assert len(queries) == len(alert_rules())
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
