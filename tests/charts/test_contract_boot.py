"""Every values file's fleet starts from the environment the chart renders for it.

For each values file (values-prod.yaml, values-staging.yaml, values-dev.yaml, values-prod.yaml
with the values-zh.yaml overlay, and values-prod.yaml with the embedding pool split into
front-ends, `embedding.frontends: 2`): the rendered Redis container's own script and
redis.conf start a real redis-server, then one model service (embedding) and the gateway start
with their rendered environment (contract.processes: env, envFrom, valueFrom resolved against
the rendered Secrets), and both must answer /ready; a request through the gateway must succeed
with the rendered API key and reach Redis with the rendered password.

Remapped, and only these (this machine is not the cluster):
- HOST/PORT: 127.0.0.1 and a free port for each process (Redis: `port` and `bind` in its conf);
- paths that cannot exist here: /cache/* -> a temp dir; /tmp/auth and /etc/redis of the Redis
  container -> temp dirs; a hub model id that would need a download (prod's and staging's
  bge-base, zh's Chinese model) -> the packaged MiniLM directory; DEVICE cuda -> cpu and DTYPE ->
  auto when no GPU is present;
- discovery: no API server here, so the gateway's kubernetes discovery becomes static, with the
  embedding pool at the started service's URL and the other pools empty; Redis' Service host
  becomes 127.0.0.1:<port>.
Everything else (limits, keys, passwords, timeouts, batching, log settings) is as rendered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis as redis_lib

from modelfleet.resolve import packaged_embedding_dir
from tests.charts.contract import Process, Resolver, processes
from tests.charts.helm import component_name, render
from tests.support.procs import LOG_DIR, ROOT, Proc, free_port, wait_port, wait_until_ready

MODEL_SERVICE = "embedding"


def _base_env() -> dict[str, str]:
    # The interpreter's own needs, nothing of the fleet's configuration.
    return {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "LANG") if k in os.environ}


def _spawn(name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"contract-{name}-{port}.log"
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return Proc(name, popen, port, log_path, env)


def _remap_paths(env: dict[str, str], tmp: Path) -> dict[str, str]:
    return {k: v.replace("/cache/", f"{tmp}/cache/") for k, v in env.items()}


def _start_redis(proc: Process, configmap: str, tmp: Path) -> Proc:
    port = free_port()
    etc, auth = tmp / "etc-redis", tmp / "auth"
    etc.mkdir()
    auth.mkdir()
    conf = configmap.replace("port 6379", f"port {port}\nbind 127.0.0.1")
    conf = conf.replace("dir /data", f"dir {tmp}").replace("/tmp/auth", str(auth))
    (etc / "redis.conf").write_text(conf)
    # The container's command and args as rendered, run by sh here too.
    script = proc.argv[-1].replace("/tmp/auth", str(auth)).replace("/etc/redis", str(etc))
    assert proc.argv[:2] == ["sh", "-c"]
    env = {**_base_env(), "REDIS_PASSWORD": proc.env["REDIS_PASSWORD"]}
    redis = _spawn("redis", ["sh", "-c", script], env, port)
    wait_port(port)
    return redis


def _start_fleet_process(proc: Process, env: dict[str, str], tmp: Path) -> Proc:
    prefix = f"MODELFLEET_{proc.name.upper()}_"
    port = free_port()
    env = {**_base_env(), **_remap_paths(env, tmp)}
    env[prefix + "HOST"], env[prefix + "PORT"] = "127.0.0.1", str(port)
    started = _spawn(proc.name, [sys.executable, "-m", f"services.{proc.name}"], env, port)
    wait_until_ready(started, timeout=240)
    return started


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mf-contract-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.parametrize(
    ("values_files", "overrides"),
    [
        (("values-prod.yaml",), {}),
        (("values-staging.yaml",), {}),
        (("values-dev.yaml",), {}),
        (("values-prod.yaml", "values-zh.yaml"), {}),  # the overlay, as its header installs it
        # A GPU fleet's embedding pool split into front-ends and one model worker.
        (("values-prod.yaml",), {"embedding__frontends": 2}),
    ],
    ids=["prod", "staging", "dev", "prod-zh", "prod-frontends"],
)
def test_the_rendered_fleet_starts_and_is_ready(
    values_files: tuple[str, ...], overrides: dict[str, Any], tmp: Path
) -> None:
    out = render(*values_files, **overrides)
    procs = {p.name: p for p in processes(out)}
    started: list[Proc] = []
    try:
        # Redis, from its rendered script and config.
        conf = Resolver(out).lookup("ConfigMap", component_name("redis"), "redis.conf", "redis")
        redis = _start_redis(procs["redis"], conf, tmp)
        started.append(redis)
        client = redis_lib.Redis(port=redis.port, password=procs["redis"].env["REDIS_PASSWORD"])
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert int(client.config_get("maxmemory")["maxmemory"]) > 0
        with pytest.raises(redis_lib.AuthenticationError):
            redis_lib.Redis(port=redis.port).ping()

        # The model service.
        svc = procs[MODEL_SERVICE]
        env = dict(svc.env)
        p = f"MODELFLEET_{MODEL_SERVICE.upper()}_"
        if env[p + "MODEL"] and not Path(env[p + "MODEL"]).is_dir():
            env[p + "MODEL"] = str(packaged_embedding_dir())
        if env[p + "DEVICE"] == "cuda" and not _has_cuda():
            env[p + "DEVICE"], env[p + "DTYPE"] = "cpu", "auto"
        service = _start_fleet_process(svc, env, tmp)
        started.append(service)
        frontends = int(env.get(p + "FRONTENDS", "1"))
        assert frontends == overrides.get("embedding__frontends", 1)
        if frontends > 1:  # the rendered setting is the one that took effect: a process tree
            children = [c.cmdline() for c in psutil.Process(service.popen.pid).children()]
            spawned = [c for c in children if any("spawn_main" in a for a in c)]
            assert len(spawned) == frontends + 1, children  # the model worker + the front-ends

        # The gateway.
        gw = procs["gateway"]
        env = dict(gw.env)
        g = "MODELFLEET_GATEWAY_"
        env[g + "DISCOVERY"] = "static"
        for pool in ("llm", "embedding", "classification", "generation"):
            env.pop(f"{g}{pool.upper()}__SERVICE", None)
            env[f"{g}{pool.upper()}__URLS"] = service.url if pool == MODEL_SERVICE else ""
        env[g + "REDIS_URL"] = env[g + "REDIS_URL"].replace(
            f"@{component_name('redis')}:6379", f"@127.0.0.1:{redis.port}"
        )
        gateway = _start_fleet_process(gw, env, tmp)
        started.append(gateway)

        keys = env.get(g + "API_KEYS", "")
        headers = {"Authorization": f"Bearer {keys.split(',')[0]}"} if keys else {}
        resp = httpx.post(
            f"{gateway.url}/v1/embeddings", json={"input": ["the fleet boots"]}, headers=headers,
            timeout=60,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        # The gateway reached Redis with the rendered password.
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert 'modelfleet_redis_up{service="gateway"} 1.0' in metrics
    finally:
        for proc in reversed(started):
            proc.stop()


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
