"""The chart renders with the real Helm engine for every environment and option, and lints clean."""

from __future__ import annotations

import re

import helm_python
import pytest
import yaml

from tests.charts.helm import (
    CHART_DIR,
    ENV_FILES,
    MODEL_SERVICES,
    NAMESPACE,
    SCENARIOS,
    component_name,
    containers,
    env_of,
    load_values,
    render,
    render_scenario,
    render_values,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_renders_well_formed_manifests(scenario: str) -> None:
    out = render_scenario(scenario)
    assert out.docs, "nothing rendered"
    seen = set()
    for doc in out.docs:
        meta = doc["metadata"]
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        if doc["kind"] != "ConfigMap" or "grafana_dashboard" not in meta["labels"]:
            assert meta["namespace"] == NAMESPACE, key
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == "mf"
        assert labels["app.kubernetes.io/part-of"] == "modelfleet"
        for value in labels.values():
            assert len(str(value)) <= 63


@pytest.mark.parametrize("values_file", [None, *ENV_FILES])
def test_helm_lint_is_clean(values_file: str | None) -> None:
    values = load_values(values_file) if values_file else None
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version="v1.30.0")
    # Severity 1 is INFO ("icon is recommended"); warnings (2) and errors (3) fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("scenario", [s for s, files in SCENARIOS.items() if files])
def test_lint_passes_with_every_scenario(scenario: str) -> None:
    files = SCENARIOS[scenario]
    report = helm_python.lint(CHART_DIR, load_values(*files), strict=True, kube_version="v1.30.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"]


def test_dev_is_cpu_only_with_packaged_models_and_one_replica() -> None:
    out = render("values-dev.yaml")
    for name in MODEL_SERVICES:
        dep = out.get("Deployment", component_name(name))
        spec = dep["spec"]["template"]["spec"]
        assert dep["spec"]["replicas"] == 1
        assert "nodeSelector" not in spec and "tolerations" not in spec
        (container,) = spec["containers"]
        assert not any("gpu" in k for k in container["resources"]["limits"])
        env = env_of(container)
        assert env[f"MODELFLEET_{name.upper()}_DEVICE"] == "cpu"
        assert env[f"MODELFLEET_{name.upper()}_MODEL"] == ""  # the packaged model
        assert env["HF_HUB_OFFLINE"] == "1"
        assert container["image"].endswith(":0.1.0-cpu")
    assert not out.kinds("HorizontalPodAutoscaler")
    # Only Redis' budget (maxUnavailable 1: a single replica must not block node drains).
    (pdb,) = out.kinds("PodDisruptionBudget")
    assert pdb["metadata"]["name"] == component_name("redis")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_prod_uses_the_larger_models_on_cuda_images() -> None:
    out = render("values-prod.yaml")
    llm = out.get("Deployment", component_name("llm"))["spec"]["template"]["spec"]
    assert env_of(llm["containers"][0])["MODELFLEET_LLM_MODEL"] == "Qwen/Qwen2.5-7B-Instruct"
    emb = out.get("Deployment", component_name("embedding"))["spec"]["template"]["spec"]
    assert env_of(emb["containers"][0])["MODELFLEET_EMBEDDING_MODEL"] == "BAAI/bge-base-en-v1.5"
    for name in MODEL_SERVICES:
        spec = out.get("Deployment", component_name(name))["spec"]["template"]["spec"]
        assert spec["containers"][0]["image"].endswith(":0.1.0-cuda")
        assert env_of(spec["containers"][0])[f"MODELFLEET_{name.upper()}_ENVIRONMENT"] == (
            "production"
        )


def test_each_service_can_be_switched_off() -> None:
    for name in ("gateway", *MODEL_SERVICES):
        out = render(f"ci/{name}-off-values.yaml")
        names = {d["metadata"]["name"] for d in out.docs}
        assert component_name(name) not in names
        others = [s for s in ("gateway", *MODEL_SERVICES) if s != name]
        for other in others:
            assert component_name(other) in names
        if name != "gateway":
            gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
            env = env_of(gw["containers"][0])
            # Empty, not absent: the gateway's default would point at a replica that isn't there.
            assert env[f"MODELFLEET_GATEWAY_{name.upper()}__SERVICE"] == ""


def test_gateway_kubernetes_discovery_env_and_rbac() -> None:
    out = render()
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
    env = env_of(gw["containers"][0])
    assert env["MODELFLEET_GATEWAY_DISCOVERY"] == "kubernetes"
    assert env["MODELFLEET_GATEWAY_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for name in MODEL_SERVICES:
        assert env[f"MODELFLEET_GATEWAY_{name.upper()}__SERVICE"] == component_name(name)
    assert gw["serviceAccountName"] == component_name("gateway")
    assert gw["automountServiceAccountToken"] is True
    role = out.get("Role", component_name("gateway"))
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    # Least privilege: list/watch EndpointSlices in the release namespace, nothing else.
    assert rules == {("discovery.k8s.io", "endpointslices"): {"list", "watch"}}
    assert not out.kinds("ClusterRole") and not out.kinds("ClusterRoleBinding")
    binding = out.get("RoleBinding", component_name("gateway"))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": gw["serviceAccountName"], "namespace": NAMESPACE}
    ]
    # Model pods never talk to the API server.
    for name in MODEL_SERVICES:
        spec = out.get("Deployment", component_name(name))["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False


def test_gateway_static_discovery_gets_service_urls_and_no_rbac() -> None:
    out = render("values-dev.yaml")
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
    env = env_of(gw["containers"][0])
    assert env["MODELFLEET_GATEWAY_DISCOVERY"] == "static"
    assert env["MODELFLEET_GATEWAY_LLM__URLS"] == f"http://{component_name('llm')}:3002"
    assert (
        env["MODELFLEET_GATEWAY_GENERATION__URLS"] == f"http://{component_name('generation')}:3005"
    )
    assert not out.kinds("Role") and not out.kinds("RoleBinding")
    assert gw["automountServiceAccountToken"] is False
    # One drain value: the request deadline is the drain, the pod's grace period covers both.
    assert env["MODELFLEET_GATEWAY_SHUTDOWN_GRACE_S"] == "120"
    assert env["MODELFLEET_GATEWAY_REQUEST_TIMEOUT_S"] == "120"
    assert gw["terminationGracePeriodSeconds"] == 5 + 120 + 10


def test_gateway_without_redis_runs_without_cache() -> None:
    gw = render("ci/minimal-values.yaml").get("Deployment", component_name("gateway"))
    env = env_of(gw["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELFLEET_GATEWAY_REDIS_URL"] == ""
    assert "no Redis is configured" in render("ci/minimal-values.yaml").notes


def test_secrets_hold_api_keys_and_redis_password() -> None:
    out = render("ci/monitoring-values.yaml")
    secret = out.get("Secret", component_name("gateway"))
    assert secret["stringData"]["api-keys"] == "k1,k2"
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
    env = env_of(gw["containers"][0])
    assert env["MODELFLEET_GATEWAY_API_KEYS"] == {
        "secretKeyRef": {"name": component_name("gateway"), "key": "api-keys"}
    }
    # The Redis password comes from a Secret; the URL only references it.
    assert env["REDIS_PASSWORD"]["secretKeyRef"]["name"] == component_name("redis")
    url = env["MODELFLEET_GATEWAY_REDIS_URL"]
    assert url == f"redis://:$(REDIS_PASSWORD)@{component_name('redis')}:6379/0"
    redis_secret = out.get("Secret", component_name("redis"))
    assert len(redis_secret["data"]["redis-password"]) > 20
    # Nothing secret is inlined in any pod spec.
    for _, spec in out.pod_specs():
        for c in containers(spec):
            for e in c.get("env", []):
                if any(w in e["name"] for w in ("KEY", "PASSWORD", "TOKEN")):
                    assert "valueFrom" in e, e


def test_production_refuses_a_gateway_without_api_keys() -> None:
    values = load_values("values-prod.yaml")
    values["gateway"]["apiKeys"] = {"keys": [], "existingSecret": ""}
    with pytest.raises(helm_python.HelmError, match=r"gateway\.apiKeys"):
        render_values(values)
    values["gateway"]["apiKeys"] = {"keys": ["short"], "existingSecret": ""}
    with pytest.raises(helm_python.HelmError, match="shorter than 16 characters"):
        render_values(values)
    values["gateway"]["apiKeys"] = {"keys": ["a-long-enough-production-key"], "existingSecret": ""}
    assert render_values(values).get("Secret", component_name("gateway"))


def test_validate_values_reports_every_mistake_at_once() -> None:
    values = {
        "llm": {"gpu": {"enabled": True}, "quantize": "int8"},
        "embedding": {"model": {"source": "pvc"}},
        "classification": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
        "redis": {"enabled": True},
        "externalRedis": {"url": "redis://elsewhere:6379/0"},
    }
    with pytest.raises(helm_python.HelmError) as err:
        render_values(values)
    message = str(err.value)
    for expected in (
        "llm.gpu.enabled with device=cpu",
        "llm.gpu.enabled needs the CUDA image",
        "llm.quantize=int8 is the CPU path",
        "embedding.model.source=pvc needs embedding.model.pvc.claimName",
        "classification.autoscaling.minReplicas (5) is above maxReplicas (2)",
        "redis.enabled and externalRedis are both set",
    ):
        assert expected in message
    assert message.count("modelfleet: invalid values") == 1


def test_builtin_redis_statefulset_persistence_off_by_default() -> None:
    sts = render().get("StatefulSet", component_name("redis"))
    assert "volumeClaimTemplates" not in sts["spec"]
    redis, exporter = sts["spec"]["template"]["spec"]["containers"]
    # The password is never in argv: the script writes it to a memory-backed file.
    assert redis["command"] == ["sh", "-c"]
    assert "PASSWORD" not in redis["args"][0].split("exec")[-1]
    assert "requirepass" not in " ".join(redis["command"])
    assert redis["env"][0]["valueFrom"]["secretKeyRef"]["name"] == component_name("redis")
    assert exporter["env"][1]["valueFrom"]["secretKeyRef"]["name"] == component_name("redis")
    conf = render().get("ConfigMap", component_name("redis"))["data"]["redis.conf"]
    assert "maxmemory 256mb" in conf and "maxmemory-policy allkeys-lru" in conf
    # The 2025 CVE fixes are in 7.4.6; pulled by digest.
    assert redis["image"] == (
        "docker.io/library/redis:7.4.6-alpine@sha256:"
        "3b73847e72874be07e6657b129a94761662b79bc0f679273757d4218573b2a98"
    )
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]

    sts = render(redis__persistence__enabled=True).get("StatefulSet", component_name("redis"))
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    conf = render(redis__persistence__enabled=True).get("ConfigMap", component_name("redis"))
    assert "appendonly yes" in conf["data"]["redis.conf"]


@pytest.mark.parametrize(
    ("scenario", "secret", "key"),
    [("ci/external-redis", "managed-redis", "url"), ("ci/external-redis-url", None, "redis-url")],
)
def test_external_redis_replaces_the_statefulset(
    scenario: str, secret: str | None, key: str
) -> None:
    out = render_scenario(scenario)
    assert not out.kinds("StatefulSet")
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
    env = env_of(gw["containers"][0])
    ref = env["MODELFLEET_GATEWAY_REDIS_URL"]["secretKeyRef"]
    assert ref == {"name": secret or component_name("redis"), "key": key}
    assert "MODELFLEET_REDIS_PASSWORD" not in env
    if secret is None:
        stored = out.get("Secret", component_name("redis"))["stringData"]["redis-url"]
        assert stored.startswith("rediss://")


def test_model_sources_pvc_and_download() -> None:
    out = render("ci/model-sources-values.yaml")
    llm = out.get("Deployment", component_name("llm"))["spec"]["template"]["spec"]
    (c,) = llm["containers"]
    assert env_of(c)["MODELFLEET_LLM_MODEL"] == "/models"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"] == {
        "name": "models", "mountPath": "/models", "readOnly": True,
        "subPath": "SmolLM2-135M-Instruct",
    }  # fmt: skip
    volumes = {v["name"]: v for v in llm["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}

    emb = out.get("Deployment", component_name("embedding"))["spec"]["template"]["spec"]
    (init,) = emb["initContainers"]
    init_env = env_of(init)
    assert init_env["MODEL_ID"] == "BAAI/bge-base-en-v1.5"
    assert init_env["MODEL_REVISION"] == "a5beb1e3e68b9ab74eb54cfd186867f64f240e1a"
    assert init_env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert yaml.safe_load(init_env["ALLOW_PATTERNS"]) == ["*.json", "*.safetensors", "tokenizer*"]
    assert init["image"] == emb["containers"][0]["image"]
    main_env = env_of(emb["containers"][0])
    assert main_env["MODELFLEET_EMBEDDING_MODEL"] == "BAAI/bge-base-en-v1.5"
    assert main_env["HF_HOME"] == init_env["HF_HOME"] == "/cache/huggingface"
    volumes = {v["name"]: v for v in emb["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "model-cache"
    # The baked-in source needs neither.
    cls = out.get("Deployment", component_name("classification"))["spec"]["template"]["spec"]
    assert "initContainers" not in cls
    assert "models" not in {v["name"] for v in cls["volumes"]}


def test_model_service_env_follows_the_contract() -> None:
    out = render("values-prod.yaml")
    spec = out.get("Deployment", component_name("generation"))["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    p = "MODELFLEET_GENERATION_"
    assert env[p + "PORT"] == "3005"
    assert env[p + "HOST"] == "0.0.0.0"
    assert env[p + "DEVICE"] == "cuda"
    assert env[p + "DTYPE"] == "bfloat16"
    assert env[p + "CACHE_DIR"] == "/cache/modelfleet"
    assert env[p + "MAX_BATCH_SIZE"] == "32"
    assert env[p + "QUANTIZE"] == "none"
    assert env[p + "TORCH_THREADS"]["resourceFieldRef"]["resource"] == "limits.cpu"
    # QUANTIZE is a decoder setting only.
    emb = out.get("Deployment", component_name("embedding"))["spec"]["template"]["spec"]
    assert "MODELFLEET_EMBEDDING_QUANTIZE" not in env_of(emb["containers"][0])


def test_autoscaling_hpa_cpu_default_custom_metric_and_keda() -> None:
    prod = render("values-prod.yaml")
    hpa = prod.get("HorizontalPodAutoscaler", component_name("llm"))
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "modelfleet_queue_depth"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert "replicas" not in prod.get("Deployment", component_name("llm"))["spec"]

    custom = render("ci/custom-metric-hpa-values.yaml")
    hpa = custom.get("HorizontalPodAutoscaler", component_name("llm"))
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]

    keda = render("ci/keda-values.yaml")
    assert component_name("llm") not in {
        h["metadata"]["name"] for h in keda.kinds("HorizontalPodAutoscaler")
    }
    so = keda.get("ScaledObject", component_name("llm"))
    assert so["spec"]["minReplicaCount"] == 0
    # No cpu trigger (it would block scale to zero). Demand comes from the gateway, which
    # exists while the pool is at zero; load from the pool's own queue once it runs.
    demand, load = so["spec"]["triggers"]
    assert demand["type"] == load["type"] == "prometheus"
    assert demand["metadata"]["query"] == (
        "sum(rate(modelfleet_pool_requests_total"
        f'{{namespace="{NAMESPACE}",service="gateway",pool="llm"}}[2m]))'
    )
    assert demand["metadata"]["activationThreshold"] == "0"
    assert load["metadata"]["query"] == (
        f'sum(modelfleet_queue_depth{{namespace="{NAMESPACE}",service="llm"}})'
    )
    emb = keda.get("ScaledObject", component_name("embedding"))
    assert emb["spec"]["triggers"][1]["metadata"]["query"].startswith("sum(rate(")
    (gw_trigger,) = keda.get("ScaledObject", component_name("gateway"))["spec"]["triggers"][:1]
    assert "modelfleet_requests_in_flight" in gw_trigger["metadata"]["query"]


def test_notes_tell_how_to_reach_the_gateway() -> None:
    notes = render().notes
    assert f"port-forward svc/{component_name('gateway')} 8080:8080" in notes
    assert "helm test mf" in notes
    lb = render("ci/monitoring-values.yaml").notes
    assert "https://fleet.example.com/v1/models" in lb
    assert "Authorization: Bearer" in lb


def test_helm_test_pod_checks_the_gateway() -> None:
    out = render()
    (pod,) = out.kinds("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert f"{component_name('gateway')}:8080/ready" in pod["spec"]["containers"][0]["args"][0]
    assert not render("ci/minimal-values.yaml").kinds("Pod")


def test_dashboards_render_into_sidecar_configmaps() -> None:
    out = render("values-prod.yaml")
    maps = [m for m in out.kinds("ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard")]
    shipped = sorted(p.name for p in (CHART_DIR / "dashboards").glob("*.json"))
    assert sorted(k for m in maps for k in m["data"]) == shipped
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m["metadata"]["annotations"]["grafana_folder"] == "modelfleet"
        (name, body) = next(iter(m["data"].items()))
        assert body == (CHART_DIR / "dashboards" / name).read_text().rstrip("\n")


def test_prometheus_rule_is_the_rules_file_verbatim() -> None:
    out = render("values-prod.yaml")
    (rule,) = out.kinds("PrometheusRule")
    rules_file = yaml.safe_load((CHART_DIR / "files" / "alerts.rules.yaml").read_text())
    assert rule["spec"] == rules_file
