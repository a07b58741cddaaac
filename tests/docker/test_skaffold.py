"""skaffold.yaml: one artifact per image, helm deploy of the chart, one profile per environment."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "llm", "embedding", "classification", "generation")
CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def _apply(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a profile's JSON patches; a replace on a missing path fails, as in skaffold."""
    out = copy.deepcopy(config)
    for patch in patches:
        assert patch["op"] == "replace"
        *parents, leaf = [int(p) if p.isdigit() else p for p in patch["path"].strip("/").split("/")]
        node: Any = out
        for key in parents:
            node = node[key]
        assert leaf in node if isinstance(node, dict) else leaf < len(node), patch["path"]
        node[leaf] = patch["value"]
    return out


def test_api_version_and_one_artifact_per_image() -> None:
    assert CONFIG["apiVersion"].startswith("skaffold/v4beta")
    assert CONFIG["kind"] == "Config"
    artifacts = CONFIG["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == [f"modelfleet-{s}" for s in SERVICES]
    for artifact, service in zip(artifacts, SERVICES, strict=True):
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == "docker/Dockerfile"
        assert (ROOT / artifact["docker"]["dockerfile"]).is_file()
        assert artifact["docker"]["buildArgs"]["SERVICE"] == service
        assert artifact["docker"]["buildArgs"]["VARIANT"] == "cpu"
        expected_deps = "gateway" if service == "gateway" else "model"
        assert artifact["docker"]["buildArgs"].get("DEPS", "model") == expected_deps


def test_helm_deploy_of_the_chart_sets_every_image() -> None:
    (release,) = CONFIG["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "charts/modelfleet"
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    templates = release["setValueTemplates"]
    for service in SERVICES:
        key = service.replace("-", "_")
        assert templates[f"{service}.image.repository"] == f"{{{{.IMAGE_REPO_modelfleet_{key}}}}}"
        assert templates[f"{service}.image.tag"].startswith(f"{{{{.IMAGE_TAG_modelfleet_{key}}}}}")


def test_profiles_point_at_the_environment_values_files() -> None:
    profiles = {p["name"]: p for p in CONFIG["profiles"]}
    assert set(profiles) == {"dev", "staging", "prod"}
    for env, profile in profiles.items():
        effective = _apply(CONFIG, profile["patches"])
        (release,) = effective["deploy"]["helm"]["releases"]
        assert release["valuesFiles"] == [f"charts/modelfleet/values-{env}.yaml"]
        assert (ROOT / release["valuesFiles"][0]).is_file()
        variants = {a["docker"]["buildArgs"]["SERVICE"]: a["docker"]["buildArgs"]["VARIANT"]
                    for a in effective["build"]["artifacts"]}  # fmt: skip
        assert variants["gateway"] == "cpu"
        expected = "cpu" if env == "dev" else "cuda"
        assert {variants[s] for s in SERVICES[1:]} == {expected}, env


def test_deploy_waits_for_ready_pods_with_a_timeout() -> None:
    helm = CONFIG["deploy"]["helm"]
    (release,) = helm["releases"]
    assert release["wait"] is True
    for phase in ("install", "upgrade"):
        assert "--timeout=20m" in helm["flags"][phase]
    assert CONFIG["deploy"]["statusCheck"] is True
    assert CONFIG["deploy"]["statusCheckDeadlineSeconds"] >= 20 * 60
    # Images by digest: skaffold's tag template carries the built digest.
    for key, value in release["setValueTemplates"].items():
        if key.endswith(".image.tag"):
            assert "@{{.IMAGE_DIGEST_" in value, key
