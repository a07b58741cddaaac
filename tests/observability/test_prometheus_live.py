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

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.localfleet import redis_argv
from tests.charts.helm import render
from tests.observability.queries import (
    Query,
    adapter_queries,
    alert_queries,
    dashboard_queries,
    variable_queries,
)
from tests.support.procs import LOG_DIR, Proc, free_port, start_service, wait_port

MODEL_SERVICES = ("llm", "embedding", "classification", "generation")
NAMESPACE = "modelfleet-test"
API_KEY = "observability-test-key"
PROMETHEUS = shutil.which("prometheus")
SCRAPE_INTERVAL_S = 1.0
# Dashboards use Grafana's $__rate_interval (4 scrape intervals at least); 15 s of 1 s scrapes.
RATE_INTERVAL = "15s"
# The namespace of the gateway whose llm pool is at zero replicas.
ZERO_NAMESPACE = "modelfleet-zero"
FIXTURES = Path(__file__).parent / "fixtures"
REDIS_EXPORTER = shutil.which("prometheus-redis-exporter")


@dataclass
class Fleet:
    procs: dict[str, Proc]  # fleet processes, scraped as themselves
    extra: dict[str, tuple[Proc, str, dict[str, str]]]  # job -> (process, namespace, labels)


def _spawn(name: str, argv: list[str], port: int) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    proc = Proc(name, popen, port, log_path)
    wait_port(port, 20)
    return proc


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    # The suite's session-wide service processes (tests/conftest.py), plus a gateway over them.
    procs: dict[str, Proc] = {n: request.getfixturevalue(f"{n}_proc") for n in MODEL_SERVICES}
    started: list[Proc] = []
    try:
        redis_server = shutil.which("redis-server")
        assert redis_server and REDIS_EXPORTER, "`make sysdeps` installs redis and its exporter"
        redis_port = free_port()
        # The `make run` Redis (maxmemory + allkeys-lru), on a free port.
        redis = _spawn("redis", redis_argv(redis_server, redis_port), redis_port)
        started.append(redis)
        exporter_port = free_port()
        exporter = _spawn("redis-exporter", [
            REDIS_EXPORTER, f"--redis.addr=redis://127.0.0.1:{redis_port}",
            f"--web.listen-address=127.0.0.1:{exporter_port}",
        ], exporter_port)  # fmt: skip
        started.append(exporter)
        fixture_port = free_port()
        kube = _spawn("kubernetes-fixture", [
            sys.executable, "-m", "http.server", str(fixture_port), "--bind", "127.0.0.1",
            "--directory", str(FIXTURES),
        ], fixture_port)  # fmt: skip
        started.append(kube)
        env = {
            "API_KEYS": API_KEY,
            "DISCOVERY": "static",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            **{f"{n.upper()}__URLS": procs[n].url for n in MODEL_SERVICES},
        }
        gateway = start_service("gateway", env)
        started.append(gateway)
        procs["gateway"] = gateway
        # The decoder pools at zero replicas (llm and its fallback, generation): empty pools.
        zero = start_service("gateway", {**env, "LLM__URLS": "", "GENERATION__URLS": ""})
        started.append(zero)
        extra = {
            "redis": (exporter, NAMESPACE, {"pod": "mf-modelfleet-redis-0"}),
            "kubernetes": (kube, NAMESPACE, {"__metrics_path__": "/kubernetes-series.prom"}),
            # A vLLM pool's /metrics (no GPU here to run vLLM on): fixtures/vllm-series.prom.
            "vllm": (kube, NAMESPACE, {"__metrics_path__": "/vllm-series.prom"}),
            "gateway-zero": (zero, ZERO_NAMESPACE, {"pod": "gateway-zero-0"}),
        }
        yield Fleet(procs, extra)
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(scope="module")
def prometheus(fleet: Fleet) -> Iterator[str]:
    assert PROMETHEUS is not None, "prometheus is not installed (`make sysdeps` installs it)"
    workdir = Path(tempfile.mkdtemp(prefix="mf-prometheus-"))
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S:g}s",
            "scrape_timeout": f"{int(SCRAPE_INTERVAL_S * 800)}ms",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S:g}s",
        },
        "scrape_configs": [
            {
                "job_name": name,
                # As the chart's ServiceMonitors: the fleet's own `service` label wins.
                "honor_labels": True,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{proc.port}"],
                        "labels": {"namespace": NAMESPACE, "pod": f"{name}-0"},
                    }
                ],
            }
            for name, proc in fleet.procs.items()
        ]
        + [
            {
                "job_name": job,
                # Exported labels win, as with the ServiceMonitors of kube-prometheus-stack.
                "honor_labels": True,
                "metrics_path": "/metrics",  # __metrics_path__ in the labels overrides it
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{proc.port}"],
                        "labels": {"namespace": namespace, **labels},
                    }
                ],
            }
            for job, (proc, namespace, labels) in fleet.extra.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"prometheus-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if popen.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log_path.read_text()[-3000:]}")
        return _get(f"{url}/-/ready").status_code == 200

    try:
        _wait_for(ready, 30, "prometheus ready")
        yield url
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


def _get(url: str, **params: Any) -> httpx.Response:
    try:
        return httpx.get(url, params=params, timeout=10)
    except httpx.TransportError as exc:
        return httpx.Response(599, text=str(exc))


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if check():
                return
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _query(prometheus: str, promql: str) -> dict[str, Any]:
    resp = _get(f"{prometheus}/api/v1/query", query=promql)
    body: dict[str, Any] = (
        resp.json()
        if resp.headers.get("content-type", "").startswith("application/json")
        else {"status": "error", "error": resp.text}
    )
    return body


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
    expected = {p for p in fleet.procs}
    zero_demand = (
        f'sum(modelfleet_pool_requests_total{{namespace="{ZERO_NAMESPACE}",pool="llm"}}) > 0'
    )

    def all_rated() -> bool:
        result = _query(
            prometheus, f"sum by (service) (rate(modelfleet_requests_total[{RATE_INTERVAL}]))"
        )
        return {r["metric"].get("service") for r in result["data"]["result"]} >= expected

    _wait_for(all_rated, 60, f"rates of modelfleet_requests_total for {sorted(expected)}")
    _wait_for(lambda: bool(_query(prometheus, zero_demand)["data"]["result"]), 30, zero_demand)
    time.sleep(2 * SCRAPE_INTERVAL_S)  # the last gauges and histograms of the traffic
    return prometheus


def _check(query: Query, fleet: Fleet, prometheus: str) -> None:
    body = _query(prometheus, query.promql)
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
    body = _query(scraped, query.expr)
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
    body = _query(scraped, promql)
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
    body = _query(scraped, at_zero["demand"])
    assert body["status"] == "success", body
    (series,) = body["data"]["result"]
    assert float(series["value"][1]) > float(demand["metadata"]["activationThreshold"])
    # What the chart used to trigger on alone: nothing, while the pool is at zero.
    body = _query(scraped, at_zero["load"])
    assert body["status"] == "success" and body["data"]["result"] == [], body


@pytest.mark.parametrize(("uid", "metric", "label"), variable_queries())
def test_dashboard_variables_have_values(
    uid: str, metric: str, label: str, fleet: Fleet, scraped: str
) -> None:
    resp = _get(f"{scraped}/api/v1/label/{label}/values", **{"match[]": metric})
    body = resp.json()
    assert body["status"] == "success"
    if metric.startswith("modelfleet_gpu_"):
        assert body["data"] == []  # no GPU here
        return
    assert body["data"], f"{uid}: label_values({metric}, {label}) is empty"
