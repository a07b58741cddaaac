"""Tracing's configuration. Off (no OTLP endpoint configured) costs nothing: no SDK, no spans,
the app unwrapped; on, the sample ratio applies to new traces and a caller's decision is followed.

The gateway is built in a fresh interpreter, as its ``main()`` builds it, and requests go
through it in process (with and without a sampled ``traceparent``). With tracing off nothing of
the OpenTelemetry trace SDK or exporter may be imported (redis-py imports parts of the SDK's
metrics for its own use), no tracer provider is installed, and the ASGI app served is the
untraced one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from modelfleet import tracing
from modelfleet.logs import JsonFormatter
from modelfleet.trace_asgi import TracingMiddleware, instrument
from tests.support.procs import ROOT

PROBE = r"""
import asyncio, json, sys
import httpx
from opentelemetry import trace
from modelfleet import tracing
from modelfleet.middleware import RequestContextMiddleware
from modelfleet.settings import load_settings
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

s = load_settings(GatewaySettings)
on = tracing.configure("gateway", s.otlp_endpoint, s.trace_sample_ratio)
app = create_app(s)
memory = None
if on:  # a second exporter, in memory, to see which spans were recorded
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.post("/v1/embeddings", json={"input": "x"},
                         headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
        await c.post("/v1/embeddings", json={"input": "no traceparent"})
        return r.status_code

status = asyncio.run(main())
print(json.dumps({
    "on": on,
    "enabled": tracing.ENABLED,
    "unwrapped": type(app) is RequestContextMiddleware,
    "provider": type(trace.get_tracer_provider()).__name__,
    "sdk_imported": sorted(m for m in sys.modules
                           if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))),
    "status": status,
    "traces": sorted({f"{x.context.trace_id:032x}" for x in memory.get_finished_spans()})
              if memory else [],
}))
"""


def _probe(extra_env: dict[str, str]) -> dict[str, object]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MODELFLEET_GATEWAY_"))
    }
    env.update(PYTHONPATH=f"{ROOT / 'shared'}:{ROOT}", MODELFLEET_GATEWAY_DISCOVERY="static")
    env.update(extra_env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_without_an_endpoint_no_sdk_is_loaded_and_the_app_is_the_untraced_one() -> None:
    got = _probe({})
    assert got["on"] is False and got["enabled"] is False
    assert got["unwrapped"] is True
    assert got["provider"] == "ProxyTracerProvider"  # the API's default: no-op spans
    assert got["sdk_imported"] == []
    assert got["status"] == 503  # a request went through (no replica behind it)


def test_the_same_probe_with_an_endpoint_turns_tracing_on() -> None:
    """The probe above can tell: with an endpoint the SDK is there and the app is wrapped."""
    got = _probe({"MODELFLEET_GATEWAY_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert got["on"] is True and got["enabled"] is True
    assert got["unwrapped"] is False
    assert got["provider"] == "TracerProvider"
    assert got["sdk_imported"]
    assert len(got["traces"]) == 2  # type: ignore[arg-type]


def test_sample_ratio_zero_records_only_what_a_caller_sampled() -> None:
    got = _probe({
        "MODELFLEET_GATEWAY_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "MODELFLEET_GATEWAY_TRACE_SAMPLE_RATIO": "0",
    })  # fmt: skip
    assert got["traces"] == ["ab" * 16]


@pytest.mark.parametrize(
    ("setting", "env", "url"),
    [
        ("", {}, None),
        ("http://jaeger:4318/", {}, "http://jaeger:4318/v1/traces"),
        ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/t"}, "http://c:4318/t"),
        (
            "http://mine:4318",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            "http://mine:4318/v1/traces",
        ),
        ("http://mine:4318", {"OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_endpoint_precedence(setting: str, env: dict[str, str], url: str | None) -> None:
    assert tracing.endpoint_from(setting, env) == url


def test_off_in_this_process_means_no_capture_no_wrapper_no_log_fields() -> None:
    assert not tracing.ENABLED
    assert tracing.capture() is None

    async def app(scope: object, receive: object, send: object) -> None: ...

    assert instrument(app) is app
    assert not isinstance(instrument(app), TracingMiddleware)
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO"})
    line = json.loads(JsonFormatter("x").format(record))
    assert "trace_id" not in line and "span_id" not in line
