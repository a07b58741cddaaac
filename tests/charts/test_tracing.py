"""Tracing in the chart: off by default; tracing.otlpEndpoint reaches every fleet process as its
OTLP_ENDPOINT setting (the contract test checks a Settings field reads it) and opens egress to
the collector's port."""

from __future__ import annotations

from tests.charts.helm import SERVICES, component_name, env_of, render

ENDPOINT = "http://jaeger-collector.observability:4318"


def _main_env(out: object, svc: str) -> dict[str, object]:
    dep = out.get("Deployment", component_name(svc))  # type: ignore[attr-defined]
    return env_of(dep["spec"]["template"]["spec"]["containers"][0])


def test_tracing_is_off_by_default() -> None:
    out = render()
    for svc in SERVICES:
        env = _main_env(out, svc)
        assert not [k for k in env if "OTLP" in k or k.startswith("OTEL_")], (svc, env)


def test_the_endpoint_and_ratio_reach_every_process_and_egress_opens() -> None:
    out = render(tracing__otlpEndpoint=ENDPOINT, tracing__sampleRatio=0.25)
    for svc in SERVICES:
        env = _main_env(out, svc)
        prefix = f"MODELFLEET_{svc.upper()}_"
        assert env[prefix + "OTLP_ENDPOINT"] == ENDPOINT
        assert env[prefix + "TRACE_SAMPLE_RATIO"] == "0.25"
        policy = out.get("NetworkPolicy", component_name(svc))
        ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
        assert 4318 in ports, (svc, ports)


def test_a_collector_url_without_a_port_opens_the_scheme_port() -> None:
    out = render(tracing__otlpEndpoint="https://otlp.example.com")
    policy = out.get("NetworkPolicy", component_name("gateway"))
    ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    assert 443 in ports
