"""What a platform team's first review of the chart found (issue 10), each as a rendered fact."""

from __future__ import annotations

import hashlib
from typing import Any

import helm_python
import pytest
import yaml

from tests.charts.helm import (
    MODEL_SERVICES,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    chart,
    component_name,
    containers,
    load_values,
    render,
    render_scenario,
    render_values,
)


def _pod(out: Any, name: str, kind: str = "Deployment") -> dict[str, Any]:
    spec: dict[str, Any] = out.get(kind, component_name(name))["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_spread_honours_taints(scenario: str) -> None:
    """DoNotSchedule with the default Ignore counts tainted GPU nodes as empty domains."""
    for where, spec in render_scenario(scenario).pod_specs():
        for c in spec.get("topologySpreadConstraints", []):
            assert c["nodeTaintsPolicy"] == "Honor", where
            assert c["nodeAffinityPolicy"] == "Honor", where


def test_prod_gateway_spreads_hard_and_honours_taints() -> None:
    (c,) = _pod(render("values-prod.yaml"), "gateway")["topologySpreadConstraints"]
    assert c["whenUnsatisfiable"] == "DoNotSchedule" and c["nodeTaintsPolicy"] == "Honor"


def test_staging_model_pools_never_roll_to_zero() -> None:
    out = render("values-staging.yaml")
    for name in MODEL_SERVICES:
        dep = out.get("Deployment", component_name(name))
        assert out.get("HorizontalPodAutoscaler", component_name(name))["spec"]["minReplicas"] == 1
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_one_replica_with_no_surge_is_refused() -> None:
    values = load_values("values-staging.yaml")
    values["llm"]["rollout"] = {"maxSurge": 0, "maxUnavailable": 1}
    with pytest.raises(helm_python.HelmError, match="takes the pool to zero during a rollout"):
        render_values(values)


def test_redis_password_is_generated_once_per_render() -> None:
    """One value for the Secret and both checksums (randAlphaNum per include gave three)."""
    files = chart().render(values={}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    digest = hashlib.sha256(files["modelfleet/templates/redis/secret.yaml"].encode()).hexdigest()
    # The same render, parsed: both pods' checksums are of the very Secret that was rendered.
    out = render_values({})
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["metadata"]
    sts = out.get("StatefulSet", component_name("redis"))["spec"]["template"]["metadata"]
    assert gw["annotations"]["checksum/redis"] == sts["annotations"]["checksum/secret"]
    text = files["modelfleet/templates/gateway/deployment.yaml"]
    gw = next(d for d in yaml.safe_load_all(text) if d)
    assert gw["spec"]["template"]["metadata"]["annotations"]["checksum/redis"] == digest
    secret = out.get("Secret", component_name("redis"))
    # Survives `helm uninstall`, so a reinstall's lookup finds the same password.
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_redis_existing_secret_is_used_as_is() -> None:
    out = render(
        redis__auth__existingSecret="my-redis", redis__auth__existingSecretPasswordKey="pw"
    )
    assert component_name("redis") not in {s["metadata"]["name"] for s in out.kinds("Secret")}
    spec = _pod(out, "redis", "StatefulSet")
    for c in spec["containers"]:
        (ref,) = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "REDIS_PASSWORD"]
        assert ref == {"name": "my-redis", "key": "pw"}


def test_redis_is_bounded_budgeted_exported_and_pinned() -> None:
    out = render("values-prod.yaml")
    conf = out.get("ConfigMap", component_name("redis"))["data"]["redis.conf"]
    assert "maxmemory 2gb" in conf and "maxmemory-policy allkeys-lru" in conf
    assert out.get("PodDisruptionBudget", component_name("redis"))["spec"]["maxUnavailable"] == 1
    redis, exporter = _pod(out, "redis", "StatefulSet")["containers"]
    for c in (redis, exporter):
        assert "@sha256:" in c["image"], c["image"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    monitors = {m["metadata"]["name"] for m in out.kinds("ServiceMonitor")}
    assert component_name("redis") in monitors


def test_downloaded_models_are_pinned_to_a_commit() -> None:
    values = load_values("values-prod.yaml")
    values["llm"]["model"]["revision"] = "main"
    with pytest.raises(helm_python.HelmError, match="pinned to a commit"):
        render_values(values)
    out = render("values-prod.yaml")
    for name in ("llm", "embedding", "generation"):
        (init,) = _pod(out, name)["initContainers"]
        revision = {e["name"]: e.get("value") for e in init["env"]}["MODEL_REVISION"]
        assert len(revision) == 40 and int(revision, 16) >= 0


def test_model_cache_disk_is_requested_and_can_persist() -> None:
    out = render("values-prod.yaml")
    llm = _pod(out, "llm")["containers"][0]
    assert llm["resources"]["requests"]["ephemeral-storage"] == "40Gi"
    # A persistent cache: no ephemeral request for it, the claim is mounted at /cache.
    out = render("values-prod.yaml", llm__cache__existingClaim="model-cache")
    spec = _pod(out, "llm")
    assert "ephemeral-storage" not in spec["containers"][0]["resources"]["requests"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "model-cache"


def test_gpu_product_affinity_merges_with_user_affinity() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [zone]}]}}}  # fmt: skip
    out = render("values-prod.yaml", llm__gpu__products=["NVIDIA-H100-80GB-HBM3"],
                 llm__affinity=affinity)  # fmt: skip
    terms = _pod(out, "llm")["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    product = {"key": "nvidia.com/gpu.product", "operator": "In",
               "values": ["NVIDIA-H100-80GB-HBM3"]}  # fmt: skip
    assert terms == [{"matchExpressions": [zone, product]}]
    assert "affinity" not in _pod(render("values-prod.yaml"), "embedding")


def test_moving_image_tags_are_refused_and_digests_pinned() -> None:
    with pytest.raises(helm_python.HelmError, match=r"gateway\.image\.tag=latest moves"):
        render(gateway__image__tag="latest")
    digest = "sha256:" + "ab" * 32
    out = render(llm__image__digest=digest)
    assert _pod(out, "llm")["containers"][0]["image"] == (
        f"ghcr.io/modelfleet/modelfleet-llm:0.1.0-cpu@{digest}"
    )
    for _, spec in render("values-prod.yaml").pod_specs():
        for c in containers(spec):
            tag = c["image"].split("@")[0].rsplit(":", 1)[1]
            assert tag not in ("latest", "main", "stable"), c["image"]


def test_metrics_stay_off_the_public_ingress() -> None:
    ing = render("ci/monitoring-values.yaml").get("Ingress", component_name("gateway"))
    (rule,) = ing["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/v1"]


def test_monitoring_objects_carry_the_label_kube_prometheus_stack_selects() -> None:
    out = render("values-prod.yaml")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in out.kinds(kind):
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind


def test_notes_say_the_chart_owns_replica_counts() -> None:
    notes = render("values-prod.yaml").notes
    assert "owned by the chart's autoscalers" in notes
    assert "kubectl autoscale" in notes
    assert "owned by the chart's autoscalers" not in render("values-dev.yaml").notes


def test_a_decoder_pool_can_run_vllm() -> None:
    out = render("ci/vllm-values.yaml")
    spec = _pod(out, "llm")
    (c,) = spec["containers"]
    assert c["name"] == "vllm" and c["image"].startswith("docker.io/vllm/vllm-openai:v")
    assert c["args"][:3] == ["Qwen/Qwen2.5-7B-Instruct", "--revision",
                             "a09a35458c702b33eeacc393d103063234e8bc28"]  # fmt: skip
    assert "--port" in c["args"] and c["args"][c["args"].index("--port") + 1] == "3002"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["tolerations"] and spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert "initContainers" not in spec  # vLLM fetches the pinned revision itself
    gw = next(
        e["value"]
        for e in _pod(out, "gateway")["containers"][0]["env"]
        if e["name"] == "MODELFLEET_GATEWAY_LLM__HEALTH_PATH"
    )
    assert gw == "/health"
    demand, load = out.get("ScaledObject", component_name("llm"))["spec"]["triggers"]
    assert "modelfleet_pool_requests_total" in demand["metadata"]["query"]
    assert load["metadata"]["query"] == (
        f'sum(vllm:num_requests_waiting{{namespace="{NAMESPACE}",service="{component_name("llm")}"}})'
    )
    # The other pools keep the project's services.
    assert _pod(out, "generation")["containers"][0]["name"] == "generation"


def test_vllm_needs_a_gpu_and_a_hub_model() -> None:
    with pytest.raises(helm_python.HelmError) as err:
        render(llm__vllm__enabled=True)
    assert "llm.vllm.enabled needs llm.gpu.enabled=true" in str(err.value)
    assert "llm.vllm.enabled needs llm.model.id" in str(err.value)


def test_the_make_run_redis_is_memory_bounded_like_the_charts() -> None:
    import shutil
    import subprocess

    import redis as redis_lib

    from services.localfleet import redis_argv
    from tests.support.procs import free_port, wait_port

    exe = shutil.which("redis-server")
    assert exe, "`make sysdeps` installs redis-server"
    port = free_port()
    popen = subprocess.Popen(redis_argv(exe, port), stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        client = redis_lib.Redis(port=port)
        assert client.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        chart = render().get("ConfigMap", component_name("redis"))["data"]["redis.conf"]
        assert "maxmemory 256mb" in chart and "maxmemory-policy allkeys-lru" in chart
    finally:
        popen.terminate()
        popen.wait(10)
