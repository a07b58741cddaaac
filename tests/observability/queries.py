"""The PromQL the chart ships: every dashboard panel query, every template variable, every alert.

Shared by the static checks and the live Prometheus test, so both look at exactly the same text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "modelfleet"
DASHBOARD_DIR = CHART_DIR / "dashboards"
RULES_FILE = CHART_DIR / "files" / "alerts.rules.yaml"
ADAPTER_FILE = CHART_DIR / "files" / "prometheus-adapter-rules.yaml"

# The metric schema of the contract (histograms as their base name).
COMMON_METRICS = frozenset({
    "modelfleet_requests_total", "modelfleet_request_duration_seconds",
    "modelfleet_requests_in_flight", "modelfleet_batch_size", "modelfleet_queue_depth",
    "modelfleet_model_load_seconds", "modelfleet_model_info", "modelfleet_input_tokens_total",
})  # fmt: skip
DECODER_METRICS = frozenset({
    "modelfleet_prompt_tokens_total", "modelfleet_completion_tokens_total",
    "modelfleet_time_to_first_token_seconds", "modelfleet_inter_token_latency_seconds",
    "modelfleet_sequences_running", "modelfleet_sequences_waiting", "modelfleet_kv_cache_blocks",
})  # fmt: skip
GPU_METRICS = frozenset({
    "modelfleet_gpu_utilization_ratio", "modelfleet_gpu_memory_used_bytes",
    "modelfleet_gpu_memory_total_bytes",
})  # fmt: skip
GATEWAY_METRICS = frozenset({
    "modelfleet_upstream_duration_seconds", "modelfleet_upstream_retries_total",
    "modelfleet_fallbacks_total", "modelfleet_cache_requests_total", "modelfleet_backend_up",
    "modelfleet_circuit_state", "modelfleet_rate_limited_total", "modelfleet_redis_up",
    "modelfleet_pool_requests_total",
})  # fmt: skip
CONTRACT_METRICS = COMMON_METRICS | DECODER_METRICS | GPU_METRICS | GATEWAY_METRICS

_METRIC = re.compile(r"\bmodelfleet_[a-z0-9_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
# "<signal> <op> <number>" at the very end of an alert expression.
_THRESHOLD = re.compile(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.eE+-]+\s*$")
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>\w+)\s*,\s*(?P<label>\w+)\)$")


def metric_names(expr: str) -> set[str]:
    """Base metric names an expression reads (histogram suffixes stripped)."""
    names = set()
    for name in _METRIC.findall(expr):
        if name not in CONTRACT_METRICS:
            name = _HISTOGRAM_SUFFIX.sub("", name)
        names.add(name)
    return names


@dataclass(frozen=True)
class Query:
    """One PromQL expression the chart ships, with where it comes from."""

    source: str  # "dashboard <uid> / <panel title> / <refId>" or "alert <name>"
    expr: str  # as shipped
    promql: str  # ready to send to Prometheus (variables substituted, threshold stripped)

    @property
    def metrics(self) -> set[str]:
        return metric_names(self.expr)

    @property
    def needs_gpu(self) -> bool:
        return bool(self.metrics & GPU_METRICS)


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """Grafana variables -> PromQL: every multi-value variable as its "All" value."""
    out = expr.replace("$__rate_interval", rate_interval).replace(
        "${__rate_interval}", rate_interval
    )
    return re.sub(r"\$\{?(namespace|service)\}?", ".*", out)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in dashboard["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return [p for p in flat if p.get("type") != "row"]


def dashboard_queries(rate_interval: str = "1m") -> list[Query]:
    queries = []
    for board in dashboards().values():
        for panel in panels(board):
            for target in panel["targets"]:
                source = f"dashboard {board['uid']} / {panel['title']} / {target['refId']}"
                queries.append(
                    Query(source, target["expr"], substitute(target["expr"], rate_interval))
                )
    return queries


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, metric, label) of every label_values() template variable."""
    out = []
    for board in dashboards().values():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = _LABEL_VALUES.match(var["definition"])
            assert m, f"{board['uid']}: unsupported variable query {var['definition']!r}"
            out.append((board["uid"], m["metric"], m["label"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    """Each alert's signal: the expression without its final threshold comparison."""
    queries = []
    for rule in alert_rules():
        expr = rule["expr"].strip()
        signal = _THRESHOLD.sub("", expr)
        assert signal != expr, f"alert {rule['alert']} does not end in a threshold comparison"
        queries.append(Query(f"alert {rule['alert']}", expr, signal))
    return queries


def adapter_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ADAPTER_FILE.read_text())["rules"]["custom"]
    return rules


def adapter_queries(namespace: str) -> list[Query]:
    """prometheus-adapter's metricsQuery of each rule, as the adapter expands it for one HPA:
    every pod of a namespace, grouped by pod."""
    queries = []
    for rule in adapter_rules():
        metric = rule["name"]["as"]
        promql = (
            rule["metricsQuery"]
            .replace("<<.Series>>", metric)
            .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~".+"')
            .replace("<<.GroupBy>>", "pod")
        )
        queries.append(Query(f"prometheus-adapter {metric}", rule["metricsQuery"], promql))
    return queries
