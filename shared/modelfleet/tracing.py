"""OpenTelemetry traces, off unless an OTLP endpoint is configured.

Off is the default and costs nothing: :data:`ENABLED` stays ``False``, no SDK tracer provider is
installed, the ASGI app is served unwrapped and the hot paths (the gateway's raw ASGI pipeline,
the micro-batcher, the decoding engine) only test that one module-level flag. On, each process
exports its spans over OTLP/HTTP (protobuf) to ``<endpoint>/v1/traces`` in the background, with
``service.name`` = the process's name, sampled parent-based at ``TRACE_SAMPLE_RATIO``.

The endpoint, first that is set: the process's ``MODELFLEET_<SVC>_OTLP_ENDPOINT`` setting (a
base URL, like ``http://jaeger-collector:4318``), then the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) and ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base
URL). ``OTEL_SDK_DISABLED=true`` turns tracing off whatever is set; the SDK's other standard
variables (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_EXPORTER_OTLP_HEADERS``, ...) apply as usual.

Spans of a request, in one trace started by the caller's W3C ``traceparent`` (or a new root):
the server span of every process it passes (:mod:`modelfleet.trace_asgi`), the gateway's client
span per upstream attempt, and in a model service the ``queue``, ``batch`` and ``forward`` spans
of the micro-batcher (:mod:`modelfleet.batching`) or the ``queue``, ``prefill`` and ``decode``
spans of each sequence in the decoding engine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("modelfleet.tracing")

ENABLED = False
"""True once :func:`configure` installed an exporting tracer provider in this process."""

_tracer: Tracer | None = None


def endpoint_from(setting: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP/HTTP traces URL to export to, or None when tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if setting.strip():
        return setting.strip().rstrip("/") + "/v1/traces"
    if url := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return base.rstrip("/") + "/v1/traces"
    return None


def configure(service: str, endpoint_setting: str, sample_ratio: float) -> bool:
    """Install the exporting tracer provider if an endpoint is configured; True when on.

    Called once in a process's ``main()``, before its app is built; without an endpoint it
    imports nothing of the SDK.
    """
    global ENABLED, _tracer
    url = endpoint_from(endpoint_setting)
    if url is None:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )  # shuts down, flushing what is queued, at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("modelfleet")
    ENABLED = True
    log.info("tracing on", extra={"otlp_traces_url": url, "sample_ratio": sample_ratio})
    return True


def tracer() -> Tracer:
    assert _tracer is not None, "tracing is off"
    return _tracer


def capture() -> Span | None:
    """The current request's span, to parent work done later or elsewhere; None when off or
    the request is not sampled (so nothing further is recorded for it)."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    return span if span.is_recording() else None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, for log lines; None outside one."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def perf_to_ns(t: float, offset_ns: int) -> int:
    """A ``time.perf_counter()`` reading as epoch nanoseconds (``offset_ns`` from
    :func:`perf_offset_ns`), for spans recorded after the fact."""
    return int(t * 1e9) + offset_ns


def perf_offset_ns() -> int:
    return time.time_ns() - time.perf_counter_ns()


def child(
    parent: Span,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A finished child span of ``parent`` with the given times (work measured, then told)."""
    from opentelemetry import trace

    span = tracer().start_span(
        name,
        context=trace.set_span_in_context(parent),
        start_time=start_ns,
        attributes=dict(attributes or {}),
    )
    span.end(end_time=max(start_ns, end_ns))
    return span


def record_batch(
    items: Iterable[tuple[Span, int]],
    batch_size: int,
    taken_ns: int,
    forward_start_ns: int,
    forward_end_ns: int,
    name: str,
) -> None:
    """The ``queue``, ``batch`` and ``forward`` spans of each request in one micro-batch.

    ``items`` are (request span, enqueue time) per item; a request with several items in the
    batch gets one set of spans, its queue span starting at its earliest item.
    """
    first: dict[int, tuple[Span, int, int]] = {}
    for span, queued_ns in items:
        key = id(span)
        if key in first:
            s, q, n = first[key]
            first[key] = (s, min(q, queued_ns), n + 1)
        else:
            first[key] = (span, queued_ns, 1)
    for span, queued_ns, n in first.values():
        child(span, "queue", queued_ns, taken_ns, {"modelfleet.batcher": name})
        batch = child(
            span,
            "batch",
            taken_ns,
            forward_end_ns,
            {"modelfleet.batcher": name, "batch.size": batch_size, "batch.request_items": n},
        )
        child(batch, "forward", forward_start_ns, forward_end_ns, {"batch.size": batch_size})


def record_sequence(seq: Any, error: BaseException | None = None) -> None:
    """The ``queue``, ``prefill`` and ``decode`` spans of one finished (or abandoned) engine
    sequence, from the times the engine noted (``perf_counter`` readings); one decode span per
    sequence, not one per token."""
    parent = seq.trace
    off = perf_offset_ns()
    now = perf_to_ns(time.perf_counter(), off)
    arrival = perf_to_ns(seq.arrival, off)
    admitted = perf_to_ns(seq.admitted_at, off) if seq.admitted_at else now
    child(parent, "queue", arrival, admitted, {"modelfleet.engine": "decoder"})
    if not seq.admitted_at:
        return
    first = perf_to_ns(seq.first_token_at, off) if seq.first_token_at else now
    child(parent, "prefill", admitted, first, {"gen_ai.usage.input_tokens": len(seq.prompt)})
    if not seq.first_token_at:
        return
    end = perf_to_ns(seq.last_token_at, off) if seq.done and not error else now
    attrs: dict[str, Any] = {"gen_ai.usage.output_tokens": seq.generated}
    finish = seq.generation.finish_reason
    if finish:
        attrs["gen_ai.response.finish_reasons"] = [finish]
    if error is not None:
        attrs["error.type"] = type(error).__name__
    child(parent, "decode", first, end, attrs)
