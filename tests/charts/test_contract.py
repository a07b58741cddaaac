"""The chart's contract with the processes: every values file renders a fleet whose processes
accept the environment they are given (tests/charts/contract.py), and the prod and dev fleets
actually start from it (tests/charts/test_contract_boot.py)."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import helm_python
import pytest

from tests.charts.contract import build_settings, processes, settings_classes, violations
from tests.charts.helm import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Rendered,
    component_name,
    env_of,
    load_values,
    render,
    render_scenario,
)

# Every values file on its own (values.yaml, values-<env>.yaml, ci/*.yaml) and the combinations
# the other chart tests use.
VALUES_FILES = ["values.yaml", *sorted(p.name for p in CHART_DIR.glob("values-*.yaml"))] + [
    f"ci/{p.name}" for p in sorted((CHART_DIR / "ci").glob("*.yaml"))
]


def test_every_values_file_is_a_scenario() -> None:
    covered = {f for files in SCENARIOS.values() for f in files} | {"values.yaml"}
    assert set(VALUES_FILES) <= covered, set(VALUES_FILES) - covered


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_process_accepts_the_environment_the_chart_gives_it(scenario: str) -> None:
    out = render_scenario(scenario)
    assert violations(out) == []
    # Not vacuous: every enabled fleet process was checked.
    names = {p.name for p in processes(out)}
    for svc in settings_classes():
        for dep in out.kinds("Deployment"):
            main = dep["spec"]["template"]["spec"]["containers"][0]["name"]
            if dep["metadata"]["name"] == component_name(svc) and main != "vllm":
                assert svc in names


def _render_chart_copy(chart_dir: Path, values_file: str) -> Rendered:
    import yaml

    chart = helm_python.Chart.load(chart_dir)
    values = load_values(values_file)
    files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [
        d
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    return Rendered(tuple(docs), "")


def test_the_old_quoting_renders_tpm_as_a_float_and_the_contract_refuses_it(
    tmp_path: Path,
) -> None:
    """The bug this contract exists for: `{{ .tpm | quote }}` on Helm's float64 gives "1e+06"."""
    chart = tmp_path / "modelfleet"
    shutil.copytree(CHART_DIR, chart)
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    start = text.index('{{- define "modelfleet.str" -}}')
    end = text.index("\n\n", start) + 1  # the helper ends at the first blank line
    # What the chart did before: print the value as Go prints it.
    old = '{{- define "modelfleet.str" -}}\n{{- toString . }}\n{{- end }}\n'
    helpers.write_text(text[:start] + old + text[end:])
    out = _render_chart_copy(chart, "values-prod.yaml")
    gw = out.get("Deployment", component_name("gateway"))
    env = env_of(gw["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELFLEET_GATEWAY_RATE_LIMIT_TPM"] == "1e+06"
    problems = violations(out)
    assert any("rate_limit_tpm = '1e+06'" in p for p in problems), problems
    # The real chart renders the exact integer, and the gateway takes it.
    fixed = render("values-prod.yaml").get("Deployment", component_name("gateway"))
    fixed_env = env_of(fixed["spec"]["template"]["spec"]["containers"][0])
    assert fixed_env["MODELFLEET_GATEWAY_RATE_LIMIT_TPM"] == "1000000"


def test_large_numbers_reach_every_env_var_exactly() -> None:
    """Not only tpm: user env maps, batching, TTLs all pass through modelfleet.str."""
    out = render(
        "values-prod.yaml",
        gateway__env={"MODELFLEET_GATEWAY_MAX_BODY_BYTES": 16777216},
        gateway__cacheTtlSeconds=2592000,
        embedding__batching__maxQueue=1000000,
        embedding__batching__maxWaitMs=2.5,
    )
    assert violations(out) == []
    env = {p.name: p.env for p in processes(out)}
    assert env["gateway"]["MODELFLEET_GATEWAY_MAX_BODY_BYTES"] == "16777216"
    assert env["gateway"]["MODELFLEET_GATEWAY_CACHE_TTL_S"] == "2592000"
    assert env["embedding"]["MODELFLEET_EMBEDDING_MAX_QUEUE"] == "1000000"
    assert env["embedding"]["MODELFLEET_EMBEDDING_MAX_WAIT_MS"] == "2.5"


def test_a_misspelt_variable_is_refused() -> None:
    out = render("values-dev.yaml", gateway__env={"MODELFLEET_GATEWAY_RATE_LIMT_RPM": "5"})
    assert violations(out) == [
        f"Deployment/{component_name('gateway')}:gateway: "
        "MODELFLEET_GATEWAY_RATE_LIMT_RPM is read by no Settings field"
    ]


def test_a_secret_in_argv_is_refused() -> None:
    """What the Redis container did before: `--requirepass $(REDIS_PASSWORD)` in its args."""
    out = render()
    docs = copy.deepcopy(list(out.docs))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    redis = sts["spec"]["template"]["spec"]["containers"][0]
    redis["command"], redis["args"] = ["redis-server"], ["--requirepass", "$(REDIS_PASSWORD)"]
    problems = violations(Rendered(tuple(docs), ""))
    assert problems == [f"StatefulSet/{component_name('redis')}:redis: a secret value is in argv"]


def test_the_gateway_pool_values_map_one_to_one_onto_its_nested_settings() -> None:
    from services.gateway.settings import GatewaySettings, PoolSettings

    pools = load_values("values.yaml")["gateway"]["pools"]
    assert set(pools) == {n for n, f in GatewaySettings.model_fields.items()
                          if f.annotation is PoolSettings}  # fmt: skip
    for pool in pools.values():
        # Values are camelCase (healthPath), settings snake_case (health_path).
        snake = {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower() for key in pool}
        assert snake == set(PoolSettings.model_fields)
    # Each value lands in its own setting.
    out = render(
        "values-dev.yaml",
        gateway__pools__llm__urls=["http://a:3002", "http://b:3002"],
    )
    gw = next(p for p in processes(out) if p.name == "gateway")
    settings = build_settings(GatewaySettings, gw.env)
    assert isinstance(settings, GatewaySettings)
    assert settings.llm.urls == ("http://a:3002", "http://b:3002")
    assert settings.embedding.urls == (f"http://{component_name('embedding')}:3003",)
    out = render(gateway__pools__embedding__service="shared-embedding")
    gw = next(p for p in processes(out) if p.name == "gateway")
    settings = build_settings(GatewaySettings, gw.env)
    assert isinstance(settings, GatewaySettings)
    assert settings.embedding.service == "shared-embedding"
    assert settings.llm.service == component_name("llm")
