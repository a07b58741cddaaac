"""The live fleet and the private Prometheus that scrapes it (see test_prometheus_live.py).

The fixtures are registered for this folder by conftest.py.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.localfleet import redis_argv
from tests.support.procs import LOG_DIR, Proc, free_port, start_service, wait_port, wait_until

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
        return http_get(f"{url}/-/ready").status_code == 200

    try:
        wait_for(ready, 30, "prometheus ready")
        yield url
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


def http_get(url: str, **params: Any) -> httpx.Response:
    try:
        return httpx.get(url, params=params, timeout=10)
    except httpx.TransportError as exc:
        return httpx.Response(599, text=str(exc))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`wait_until` for a check that may fail on the way (Prometheus not answering yet,
    a series not there yet): such a failure counts as not yet."""

    def quiet() -> bool:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            return check()
        return False

    wait_until(quiet, timeout, 0.25, what)


def prom_query(prometheus: str, promql: str) -> dict[str, Any]:
    resp = http_get(f"{prometheus}/api/v1/query", query=promql)
    body: dict[str, Any] = (
        resp.json()
        if resp.headers.get("content-type", "").startswith("application/json")
        else {"status": "error", "error": resp.text}
    )
    return body
