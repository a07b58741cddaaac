"""Every dashboard panel query and every alert expression, run by a real Prometheus against the
real fleet: each must parse and return series.

A private `prometheus` (Debian's package) scrapes the services' /metrics every second, the test
drives traffic through them, then sends each query to Prometheus' HTTP API. The scrape config
mirrors the chart's ServiceMonitors (honor_labels, plus the namespace/pod target labels the
Prometheus Operator attaches), so the queries are evaluated as they will be in a cluster.

The same goes for the autoscaling signals: prometheus-adapter's rules and the KEDA triggers.

The fleet's own GPU metrics exist only on a GPU node: their panels and alert are checked to parse
(status "success") and return no series here. Everything else must return series: all five
processes run, Redis is the `make run` Redis (memory-bounded) with the real redis_exporter in
front of it, and the series only Kubernetes components produce (kube-state-metrics, NVIDIA DCGM)
come from fixtures/kubernetes-series.prom, served as one more scrape target.

A second gateway whose llm pool is empty stands for a pool KEDA has scaled to zero: the KEDA
demand query must return a series for it, while the pool's own queue depth returns nothing.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.charts.helm import render
from tests.observability.live import (
    API_KEY,
    NAMESPACE,
    RATE_INTERVAL,
    ZERO_NAMESPACE,
    Fleet,
    http_get,
    prom_query,
    wait_for,
)
from tests.observability.queries import (
    Query,
    adapter_queries,
    alert_queries,
    dashboard_queries,
    variable_queries,
)


def _drive(fleet: Fleet) -> None:
    """Traffic each service sees in production, directly and through the gateway."""
    requests: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "embedding": [
            ("/v1/embeddings", {"input": ["the fleet is up", "a second sentence"]}),
            ("/v1/similarity", {"query": "reset password", "documents": ["password help", "tax"]}),
        ],
        "classification": [
            ("/v1/classify", {"input": ["I love this", "this is awful"], "task": "sentiment"}),
        ],
        "llm": [
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi."}],
                                      "max_tokens": 8, "temperature": 0}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to 3."}],
                                      "max_tokens": 8, "stream": True}),
        ],
        "generation": [
            ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}),
            ("/v1/completions", {"prompt": "The sky is", "max_tokens": 8, "stream": True}),
        ],
    }  # fmt: skip
    with httpx.Client(timeout=120) as client:
        gateway = fleet.procs["gateway"].url
        for name, calls in requests.items():
            for route, body in calls:
                for _ in range(3):
                    _post(client, fleet.procs[name].url + route, body)
                # Twice: the second deterministic request is a cache hit.
                for _ in range(2):
                    _post(client, gateway + route, body, API_KEY)
        client.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        # A rejected key: the auth side of the rate-limit metric.
        client.get(f"{gateway}/v1/models", headers={"Authorization": "Bearer wrong-key"})
        # Demand for the pool at zero replicas: refused with 503, counted all the same.
        zero = fleet.extra["gateway-zero"][0].url
        body = {"messages": [{"role": "user", "content": "Wake up."}], "max_tokens": 4}
        resp = client.post(f"{zero}/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        assert resp.status_code == 503, resp.text


def _post(client: httpx.Client, url: str, body: dict[str, Any], key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body.get("stream"):
        with client.stream("POST", url, json=body, headers=headers) as resp:
            for _ in resp.iter_bytes():
                pass
            assert resp.status_code == 200, (url, resp.status_code)
        return
    resp = client.post(url, json=body, headers=headers)
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:500])


@pytest.fixture(scope="module")
def scraped(fleet: Fleet, prometheus: str) -> str:
    """Prometheus, after traffic, once every service's counters have two samples to rate."""
    _drive(fleet)
    traffic_end = time.time()
    expected = {p for p in fleet.procs}
    zero_demand = (
        f'sum(modelfleet_pool_requests_total{{namespace="{ZERO_NAMESPACE}",pool="llm"}}) > 0'
    )

    def all_rated() -> bool:
        result = prom_query(
            prometheus, f"sum by (service) (rate(modelfleet_requests_total[{RATE_INTERVAL}]))"
        )
        return {r["metric"].get("service") for r in result["data"]["result"]} >= expected

    wait_for(all_rated, 60, f"rates of modelfleet_requests_total for {sorted(expected)}")
    wait_for(lambda: bool(prom_query(prometheus, zero_demand)["data"]["result"]), 30, zero_demand)

    def scraped_since_traffic() -> bool:  # every target's last gauges and histograms are in
        result = prom_query(prometheus, "min(timestamp(up))")["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > traffic_end

    wait_for(scraped_since_traffic, 30, "a scrape of every target after the traffic")
    return prometheus


def _check(query: Query, fleet: Fleet, prometheus: str) -> None:
    body = prom_query(prometheus, query.promql)
    assert body["status"] == "success", f"{query.source}: {body.get('error')}\n{query.promql}"
    series = body["data"]["result"]
    if query.needs_gpu:
        # No GPU here: the query is valid PromQL over metrics that only exist on a GPU node.
        assert series == [], f"{query.source}: GPU series on a machine without a GPU?"
        return
    assert series, f"{query.source} returned no series:\n{query.promql}"


def _keda_queries() -> list[Query]:
    """The Prometheus queries of the ScaledObjects the chart renders (ci/keda-values.yaml)."""
    out = render("ci/keda-values.yaml", fullnameOverride="mf")
    queries = []
    for so in out.kinds("ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                q = trigger["metadata"]["query"].replace(
                    'namespace="fleet"', f'namespace="{NAMESPACE}"'
                )
                queries.append(Query(f"keda {so['metadata']['name']}", q, q))
    return queries


DASHBOARD_QUERIES = dashboard_queries(RATE_INTERVAL)
ALERT_QUERIES = alert_queries()
AUTOSCALING_QUERIES = [*adapter_queries(NAMESPACE), *_keda_queries()]


@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=[q.source for q in DASHBOARD_QUERIES])
def test_dashboard_query_returns_series(query: Query, fleet: Fleet, scraped: str) -> None:
    _check(query, fleet, scraped)


@pytest.mark.parametrize("query", ALERT_QUERIES, ids=[q.source for q in ALERT_QUERIES])
def test_alert_signal_returns_series(query: Query, fleet: Fleet, scraped: str) -> None:
    _check(query, fleet, scraped)
    # The full expression, threshold included, is valid PromQL too (and quiet on a healthy fleet
    # is not asserted: a cold CPU box can well be over 200 ms).
    body = prom_query(scraped, query.expr)
    assert body["status"] == "success", f"{query.source}: {body.get('error')}"


# Not just present: the traffic of _drive() must show in the series the dashboards plot.
TRAFFIC_SIGNALS = {
    "requests per service": "sum by (service) (modelfleet_requests_total) > 0",
    "batched items": "sum by (service) (modelfleet_batch_size_count) > 0",
    "input tokens": "sum by (service) (modelfleet_input_tokens_total) > 0",
    "decoder tokens": "sum by (service) (modelfleet_completion_tokens_total) > 0",
    "time to first token": "sum by (service) (modelfleet_time_to_first_token_seconds_count) > 0",
    "gateway upstream calls": "sum by (pool) (modelfleet_upstream_duration_seconds_count) > 0",
    "cache hits": 'sum(modelfleet_cache_requests_total{result="hit"}) > 0',
    "refused keys": 'sum(modelfleet_rate_limited_total{kind="auth"}) > 0',
    "healthy backends": "sum by (pool) (modelfleet_backend_up) > 0",
    "redis up": "max(modelfleet_redis_up) > 0",
}


@pytest.mark.parametrize("signal", TRAFFIC_SIGNALS)
def test_traffic_shows_in_the_series(signal: str, fleet: Fleet, scraped: str) -> None:
    promql = TRAFFIC_SIGNALS[signal]
    body = prom_query(scraped, promql)
    assert body["status"] == "success", body
    assert body["data"]["result"], f"{signal}: {promql} is empty after the traffic"


@pytest.mark.parametrize("query", AUTOSCALING_QUERIES, ids=[q.source for q in AUTOSCALING_QUERIES])
def test_autoscaling_query_returns_series(query: Query, fleet: Fleet, scraped: str) -> None:
    """What prometheus-adapter and KEDA will ask Prometheus for, per pod / per service."""
    _check(query, fleet, scraped)


def test_keda_demand_wakes_a_pool_scaled_to_zero(fleet: Fleet, scraped: str) -> None:
    """The ScaledObject of a pool at zero replicas: its own queue depth has no series (no pod
    exports it), the gateway's demand for it does, and is above the activation threshold."""
    out = render("ci/keda-values.yaml", fullnameOverride="mf")
    demand, load = out.get("ScaledObject", "mf-llm")["spec"]["triggers"]
    ns = f'namespace="{ZERO_NAMESPACE}"'
    at_zero = {
        name: trigger["metadata"]["query"].replace('namespace="fleet"', ns)
        for name, trigger in (("demand", demand), ("load", load))
    }
    # The rate window is 2m; over a 1 s scrape the single 503 already shows as a rate.
    body = prom_query(scraped, at_zero["demand"])
    assert body["status"] == "success", body
    (series,) = body["data"]["result"]
    assert float(series["value"][1]) > float(demand["metadata"]["activationThreshold"])
    # What the chart used to trigger on alone: nothing, while the pool is at zero.
    body = prom_query(scraped, at_zero["load"])
    assert body["status"] == "success" and body["data"]["result"] == [], body


@pytest.mark.parametrize(("uid", "metric", "label"), variable_queries())
def test_dashboard_variables_have_values(
    uid: str, metric: str, label: str, fleet: Fleet, scraped: str
) -> None:
    resp = http_get(f"{scraped}/api/v1/label/{label}/values", **{"match[]": metric})
    body = resp.json()
    assert body["status"] == "success"
    if metric.startswith("modelfleet_gpu_"):
        assert body["data"] == []  # no GPU here
        return
    assert body["data"], f"{uid}: label_values({metric}, {label}) is empty"
