"""Policies every rendered release must meet: GPU placement in prod, bounded and probed
containers, restrictive security contexts, selectors that select something, contract ports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.charts.helm import (
    MODEL_SERVICES,
    PORTS,
    SCENARIOS,
    Rendered,
    component_name,
    containers,
    env_of,
    render,
    render_scenario,
)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(out: Rendered) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"{w['kind']}/{w['metadata']['name']}", w["spec"]["template"]["metadata"]["labels"])
        for w in [*out.workloads(), *out.kinds("Job")]
    ]


@pytest.mark.parametrize("env", ["values-prod.yaml", "values-staging.yaml"])
def test_every_model_service_in_prod_is_placed_on_a_gpu(env: str) -> None:
    out = render(env)
    for name in MODEL_SERVICES:
        spec = out.get("Deployment", component_name(name))["spec"]["template"]["spec"]
        assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true", name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ], name
        main = spec["containers"][0]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        # torch needs more shared memory than the container default.
        assert "/dev/shm" in {m["mountPath"] for m in main["volumeMounts"]}
    gw = out.get("Deployment", component_name("gateway"))["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in gw["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in gw


def test_runtime_class_and_affinity_are_optional() -> None:
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}
            ]}
        ]}}
    }  # fmt: skip
    out = render(
        "values-prod.yaml", gpuScheduling__runtimeClassName="nvidia", llm__affinity=affinity
    )
    spec = out.get("Deployment", component_name("llm"))["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["affinity"] == affinity
    dev = render("values-dev.yaml").get("Deployment", component_name("llm"))
    assert "runtimeClassName" not in dev["spec"]["template"]["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_is_bounded_probed_and_locked_down(scenario: str) -> None:
    out = render_scenario(scenario)
    for where, spec in out.pod_specs():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, where
        for c in containers(spec):
            label = f"{where}:{c['name']}"
            res = c["resources"]
            assert res["requests"].get("cpu") and res["requests"].get("memory"), label
            assert res["limits"].get("cpu") and res["limits"].get("memory"), label
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["readOnlyRootFilesystem"] is True, label
            assert sc["capabilities"]["drop"] == ["ALL"], label
            assert "add" not in sc["capabilities"], label
            assert sc.get("privileged") is not True, label
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if not where.startswith("Pod/"):
                assert "/tmp" in mounts, f"{label}: read-only root needs a writable /tmp"
            if where.startswith("Deployment/") and c in spec["containers"]:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert probe in c, f"{label}: no {probe}"
                # vLLM has no /ready: its /health turns 200 once the engine serves.
                ready = "/health" if c["name"] == "vllm" else "/ready"
                assert c["readinessProbe"]["httpGet"]["path"] == ready, label
                # A model service's startup budget is its model-loading budget.
                startup = "/health" if c["name"] in ("gateway", "vllm") else "/ready"
                assert c["startupProbe"]["httpGet"]["path"] == startup, label
                assert c["livenessProbe"]["httpGet"]["path"] == "/health", label
                # kubelet's sleep action: no sleep binary needed in the image.
                assert c["lifecycle"]["preStop"]["sleep"]["seconds"] >= 1, label
            if where.startswith("StatefulSet/"):
                assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c), label


def test_model_services_have_a_writable_model_cache_and_a_sized_startup_probe() -> None:
    out = render("values-prod.yaml")
    for name in MODEL_SERVICES:
        dep = out.get("Deployment", component_name(name))
        spec = dep["spec"]["template"]["spec"]
        main = spec["containers"][0]
        assert "/cache" in {m["mountPath"] for m in main["volumeMounts"]}
        startup = main["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        # A 7B decoder takes minutes to reach the GPU; an encoder well under one.
        needed = 600 if name in ("llm", "generation") else 120
        assert budget >= needed, f"{name}: {budget}s is short for loading its model"
        # The grace period covers preStop plus the process's own drain (one value drives both).
        pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = int(env_of(main)[f"MODELFLEET_{name.upper()}_SHUTDOWN_GRACE_S"])
        assert drain == int(env_of(main)[f"MODELFLEET_{name.upper()}_REQUEST_TIMEOUT_S"]) == 120
        assert spec["terminationGracePeriodSeconds"] > pre_stop + drain


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_select_existing_workloads(scenario: str) -> None:
    out = render_scenario(scenario)
    pods = _pod_labels(out)
    workloads = {(w["kind"], w["metadata"]["name"]): w for w in out.workloads()}
    for w in out.workloads():
        assert _matches(
            w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]
        )

    services: dict[str, dict[str, Any]] = {}
    for svc in out.kinds("Service"):
        selected = [n for n, labels in pods if _matches(svc["spec"]["selector"], labels)]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {selected}"
        services[svc["metadata"]["name"]] = svc
    for hpa in out.kinds("HorizontalPodAutoscaler") + out.kinds("ScaledObject"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ("Deployment", ref["name"]) in workloads, ref
        assert ref.get("apiVersion", "apps/v1") == "apps/v1"
    for pdb in out.kinds("PodDisruptionBudget"):
        selected = [
            n for n, labels in pods if _matches(pdb["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(selected) == 1, f"PDB {pdb['metadata']['name']} selects {selected}"
    for np in out.kinds("NetworkPolicy"):
        selected = [
            n for n, labels in pods if _matches(np["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert len(selected) == 1, f"NetworkPolicy {np['metadata']['name']} selects {selected}"
        for rule in np["spec"]["ingress"]:
            for peer in rule.get("from", []):
                own = (
                    peer.get("podSelector", {})
                    .get("matchLabels", {})
                    .get("app.kubernetes.io/instance")
                )
                # Peers the user lists (networkPolicy.*From) are pods the chart does not render.
                if own and "namespaceSelector" not in peer:
                    peers = [
                        n
                        for n, labels in pods
                        if _matches(peer["podSelector"]["matchLabels"], labels)
                    ]
                    assert peers, f"NetworkPolicy {np['metadata']['name']} allows no existing pod"
    for sm in out.kinds("ServiceMonitor"):
        absent = {
            e["key"]
            for e in sm["spec"]["selector"].get("matchExpressions", [])
            if e["operator"] == "DoesNotExist"
        }
        matched = [
            n
            for n, s in services.items()
            if _matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
            and not absent & set(s["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"ServiceMonitor {sm['metadata']['name']} selects {matched}"
        port_names = {p["name"] for p in services[matched[0]]["spec"]["ports"]}
        assert {ep["port"] for ep in sm["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_ports_follow_the_contract(scenario: str) -> None:
    out = render_scenario(scenario)
    for svc in out.kinds("Service"):
        name = svc["metadata"]["name"]
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        if component == "redis":
            assert ports["redis"] == 6379 and ports.get("metrics", 9121) == 9121, name
        else:
            assert ports == {"http": PORTS[component]}, name
    for dep in out.kinds("Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["ports"] == [
            {"name": "http", "containerPort": PORTS[component], "protocol": "TCP"}
        ]


def test_network_policies_only_gateway_reaches_models_only_fleet_reaches_redis() -> None:
    out = render()
    gateway_pod = out.get("Deployment", component_name("gateway"))["spec"]["template"]["metadata"][
        "labels"
    ]
    for name in MODEL_SERVICES:
        np = out.get("NetworkPolicy", component_name(name))
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
        # Packaged models: no egress but DNS.
        (dns,) = np["spec"]["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        first, scrape = np["spec"]["ingress"]
        (peer,) = first["from"]
        assert set(peer) == {"podSelector"}
        assert _matches(peer["podSelector"]["matchLabels"], gateway_pod)
        for other in MODEL_SERVICES:
            labels = out.get("Deployment", component_name(other))["spec"]["template"]["metadata"][
                "labels"
            ]
            assert not _matches(peer["podSelector"]["matchLabels"], labels)
        # Prometheus, from the monitoring namespace only.
        assert scrape["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    # Redis: only the gateway, and the exporter's port only from monitoring.
    redis = out.get("NetworkPolicy", component_name("redis"))
    rule, metrics = redis["spec"]["ingress"]
    (peer,) = rule["from"]
    assert _matches(peer["podSelector"]["matchLabels"], gateway_pod)
    for name in MODEL_SERVICES:
        labels = out.get("Deployment", component_name(name))["spec"]["template"]["metadata"]
        assert not _matches(peer["podSelector"]["matchLabels"], labels["labels"])
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert "namespaceSelector" in metrics["from"][0]
    # The gateway: scraped from monitoring; egress to the models, Redis, DNS, the API server.
    gw = out.get("NetworkPolicy", component_name("gateway"))
    assert gw["spec"]["ingress"][1]["from"] == scrape["from"]
    egress_ports = {p["port"] for rule in gw["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 3002, 3003, 3004, 3005, 6379, 443, 6443}


def test_prod_has_pdbs_and_topology_spread_for_every_service() -> None:
    out = render("values-prod.yaml")
    for name in ("gateway", *MODEL_SERVICES):
        pdb = out.get("PodDisruptionBudget", component_name(name))
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
        spec = out.get("Deployment", component_name(name))["spec"]["template"]["spec"]
        (spread,) = spec["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        hpa = out.get("HorizontalPodAutoscaler", component_name(name))
        assert (
            hpa["spec"]["minReplicas"] >= 2
            and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        )
