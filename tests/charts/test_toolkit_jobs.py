"""The toolkit's Jobs (values toolkit.training / toolkit.tuning) run what the chart renders.

The scenario is ci/toolkit-jobs-values.yaml with test-sized training settings layered on as
values (the tiny encoder, one epoch of a 24-row CSV at max_length 24, 4 trials): the rendered
training Job's command runs with its rendered environment and the rendered ConfigMap's
train.yaml and must write a model directory; two rendered tuning workers run at once against a
real redis-server started from the rendered Redis container (script, redis.conf, password from
the rendered Secret) and must share one study, the password never in their argv.

Remapped, and only these (this machine is not the cluster):
- paths that cannot exist here: /config -> a temp dir holding the ConfigMap's files, /data (the
  working directory, the data volume; also inside env values such as MLFLOW_TRACKING_URI) -> a
  temp dir; the Redis container's /tmp/auth and /etc/redis -> temp dirs;
- Redis' Service host mf-modelfleet-redis:6379 -> 127.0.0.1:<free port>;
- the interpreter's own PATH (the venv's bin first, where `modelfleet` is), PYTHONPATH and LANG.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.charts.contract import Process, Resolver, processes, toolkit_config, violations
from tests.charts.helm import component_name, render
from tests.charts.test_contract_boot import _start_redis
from tests.charts.toolkit_schema import SCHEMA_FILE, config_defs
from tests.support.procs import LOG_DIR, ROOT
from tests.support.tiny import build_tiny_encoder

SCENARIO = "ci/toolkit-jobs-values.yaml"
DATA_CSV = "datasets/intent/train.csv"  # the scenario's config.data, relative to /data
INTENT = ROOT / "shared" / "modelfleet_toolkit" / "datasets" / "intent" / "train.csv"
REDIS_HOST = f"{component_name('redis')}:6379"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mf-toolkit-jobs-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _small_settings(model: Path) -> dict[str, Any]:
    """Training settings that make a run take seconds: values, layered over the scenario's."""
    return {"model": str(model), "epochs": 1, "max_length": 24, "batch_size": 8,
            "eval_fraction": 0.34, "logging_steps": 1}  # fmt: skip


def _write_data(data: Path, per_label: int = 3) -> None:
    """A few rows per label of the shipped intent training set, where the config points."""
    with INTENT.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    taken: dict[str, int] = {}
    out = data / DATA_CSV
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for row in rows:
            if taken.get(row["label"], 0) < per_label:
                taken[row["label"]] = taken.get(row["label"], 0) + 1
                w.writerow([row["text"], row["label"]])


def _job_process(procs: list[Process], name: str) -> Process:
    (proc,) = [p for p in procs if p.name == name and p.where.startswith("Job/")]
    return proc


def _launch(proc: Process, tmp: Path, env_over: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    """Start the container's process here: argv, env and working dir as rendered, remapped."""
    data, config = tmp / "data", tmp / "config"
    config.mkdir(exist_ok=True)
    for path, text in proc.files.items():
        assert path.startswith("/config/"), path
        (config / Path(path).name).write_text(text, encoding="utf-8")

    def remap(value: str) -> str:
        return value.replace("/config/", f"{config}/").replace("/data", str(data))

    env = {k: remap(v) for k, v in proc.env.items()}
    env.update(env_over)
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env.update({k: os.environ[k] for k in ("PYTHONPATH", "LANG") if k in os.environ})
    assert proc.working_dir == "/data"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / log).open("wb") as fh:
        return subprocess.Popen(
            [remap(a) for a in proc.argv], cwd=remap(proc.working_dir), env=env, stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_the_jobs_are_off_by_default() -> None:
    out = render()
    assert out.kinds("Job") == []
    assert not [c for c in out.kinds("ConfigMap") if c["metadata"]["name"].endswith("-toolkit")]


def test_the_scenario_keeps_the_contract_and_the_jobs_are_placed_on_gpus() -> None:
    out = render(SCENARIO)
    assert violations(out) == []
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in out.kinds("Job")}
    assert set(jobs) == {"train", "tune"}
    tune = jobs["tune"]["spec"]
    assert tune["completionMode"] == "Indexed"
    assert tune["parallelism"] == tune["completions"] == 3
    for job in jobs.values():
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"} <= set(
            job["spec"]
        )
    # NOTES.txt tells how to follow each Job.
    assert f"logs -f job/{jobs['train']['metadata']['name']}" in out.notes
    assert "app.kubernetes.io/component=tune" in out.notes
    # The study's journal keys never expire: an allkeys-* eviction policy may drop them.
    assert "WARNING: redis.maxmemoryPolicy" not in out.notes
    evicting = render(SCENARIO, redis__maxmemoryPolicy="allkeys-lru").notes
    assert "WARNING: redis.maxmemoryPolicy=allkeys-lru may evict the study" in evicting
    # The tuning workers may reach the built-in Redis through its NetworkPolicy.
    policy = out.get("NetworkPolicy", component_name("redis"))
    peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "tune"
        for p in peers
    )


def test_the_study_storage_reaches_the_workers_by_env_only(tmp: Path) -> None:
    out = render(SCENARIO)
    password = Resolver(out).lookup("Secret", component_name("redis"), "redis-password", "t")
    tune = _job_process(list(processes(out)), "tune")
    cfg = toolkit_config(tune, tmp)
    assert getattr(cfg, "storage") == f"redis://:{password}@{REDIS_HOST}/2"
    assert not any(password in a for a in tune.argv)
    # Putting it in argv instead is what the contract refuses.
    tune.argv += ["--storage", cfg.storage]  # type: ignore[attr-defined]
    assert any(password in a for a in tune.argv)


def test_tuning_without_a_storage_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match="toolkit.tuning.storage.type=redis needs"):
        render(SCENARIO, redis__enabled=False)
    with pytest.raises(helm_python.HelmError, match="storage.existingSecret"):
        render(SCENARIO, toolkit__tuning__storage__type="secret")
    out = render(
        SCENARIO,
        toolkit__tuning__storage={"type": "secret", "existingSecret": "study-db", "existingSecretKey": "url"},
    )  # fmt: skip
    tune = _job_process(list(processes_with_external(out)), "tune")
    assert tune.env["MODELFLEET_TUNE_STORAGE"] == "postgresql://u:contract-pw@db/optuna"


def processes_with_external(out: Any) -> Iterator[Process]:
    from tests.charts import contract

    extra = {("study-db", "url"): "postgresql://u:contract-pw@db/optuna"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(contract, "EXTERNAL_SECRETS", {**contract.EXTERNAL_SECRETS, **extra})
        yield from processes(out)


def test_a_misspelt_config_key_is_refused_at_install() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="learning_rte"):
        render(SCENARIO, toolkit__training__config__learning_rte=1e-4)


def test_the_config_schemas_are_the_toolkit_models() -> None:
    import json

    defs = json.loads(SCHEMA_FILE.read_text())["$defs"]
    fresh = config_defs()
    assert {k: defs.get(k) for k in fresh} == fresh, (
        "values.schema.json is behind the toolkit's config models: "
        "PYTHONPATH=shared:. python -m tests.charts.toolkit_schema"
    )


def test_the_rendered_training_job_trains_a_model(tmp: Path, tiny_model: Path) -> None:
    out = render(SCENARIO, toolkit__training__config=_small_settings(tiny_model))
    assert violations(out) == []
    train = _job_process(list(processes(out)), "train")
    assert train.argv == ["modelfleet", "train", "--config", "/config/train.yaml"]
    data = tmp / "data"
    _write_data(data)
    proc = _launch(train, tmp, {}, "toolkit-train.log")
    assert proc.wait(timeout=240) == 0, (LOG_DIR / "toolkit-train.log").read_text()[-3000:]
    model = data / "models" / "intent"  # the scenario's output_dir under /data
    assert (model / "model.safetensors").is_file()
    assert (model / "train_config.yaml").is_file()
    # The rendered MLFLOW_TRACKING_URI (a SQLite file on the data volume) got the run.
    assert (data / "mlflow.db").is_file()


def test_two_rendered_tuning_workers_share_one_study(tmp: Path, tiny_model: Path) -> None:
    import optuna

    from modelfleet_toolkit.tune import storage

    n_trials, workers = 4, 2
    out = render(
        SCENARIO,
        toolkit__tuning__workers=workers,
        toolkit__tuning__config={"train": _small_settings(tiny_model), "n_trials": n_trials},
    )
    assert violations(out) == []
    procs = list(processes(out))
    conf = Resolver(out).lookup("ConfigMap", component_name("redis"), "redis.conf", "redis")
    redis_proc = next(p for p in procs if p.name == "redis")
    password = redis_proc.env["REDIS_PASSWORD"]
    redis = _start_redis(redis_proc, conf, tmp)
    started: list[subprocess.Popen[bytes]] = []
    try:
        tune = _job_process(procs, "tune")
        url = tune.env["MODELFLEET_TUNE_STORAGE"]
        assert password in url and REDIS_HOST in url
        here = url.replace(REDIS_HOST, f"127.0.0.1:{redis.port}")
        _write_data(tmp / "data")
        for i in range(workers):
            started.append(
                _launch(tune, tmp, {"MODELFLEET_TUNE_STORAGE": here}, f"toolkit-tune-{i}.log")
            )
        # What `ps` shows of the workers while they run: never the password.
        seen = 0
        deadline = time.monotonic() + 240
        while any(p.poll() is None for p in started) and time.monotonic() < deadline:
            for p in started:
                try:
                    cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if not cmdline:  # exited, not yet reaped
                    continue
                assert password.encode() not in cmdline
                assert b"tune" in cmdline
                seen += 1
            time.sleep(0.5)
        assert seen > 0
        for i, p in enumerate(started):
            assert p.wait(timeout=10) == 0, (LOG_DIR / f"toolkit-tune-{i}.log").read_text()[-3000:]

        study_name = getattr(toolkit_config(tune, tmp), "study_name")
        study = optuna.load_study(study_name=study_name, storage=storage(here))
        done = [t for t in study.trials if t.state.is_finished()]
        # One budget for the study, not n_trials per worker: it ends with n_trials finished
        # trials, plus at most one per other worker still running when the budget filled.
        assert n_trials <= len(done) <= n_trials + workers - 1, len(done)
        by_worker = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in done}
        assert by_worker == {str(p.pid) for p in started}, by_worker
        # The study sits in the Redis database the values chose (toolkit.tuning.storage.redisDb).
        assert url.endswith("/2")
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()
        redis.stop()


def test_an_upgrade_keeps_a_job_unless_its_pod_would_change() -> None:
    """A Job's pod template is immutable: `helm upgrade` with a changed template would fail, and
    recreating an unchanged Job would train again. The name follows the template exactly."""

    def names(**overrides: Any) -> dict[str, str]:
        out = render(SCENARIO, **overrides)
        return {j["metadata"]["labels"]["app.kubernetes.io/component"]: j["metadata"]["name"]
                for j in out.kinds("Job")}  # fmt: skip

    base = names()
    assert names(commonLabels={"team": "ml"}) == base  # labels outside the pod template
    assert names(gateway__replicas=3) == base
    changed = names(toolkit__training__config__epochs=4)  # the ConfigMap, hashed into the pod
    assert changed["train"] != base["train"] and changed["tune"] == base["tune"]
    placed = names(gpuScheduling__runtimeClassName="nvidia")
    assert placed["train"] != base["train"] and placed["tune"] != base["tune"]
