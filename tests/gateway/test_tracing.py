"""Traces across real processes: a gateway, an embedding and an llm service exporting to a real
OTLP/HTTP receiver (tests/support/otlp.py), each request sent with a known W3C ``traceparent``.

One trace id from the caller's traceparent through the gateway's server span, its client span
per upstream attempt, the service's server span and the service's own spans (micro-batcher:
queue, batch, forward; decoding engine: queue, prefill, decode), each span's parent the right
one; and the trace id in the services' JSON log line of that request.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import LLM_ENV
from tests.gateway.conftest import EMBEDDING_ENV, gateway, start_gateway
from tests.gateway.fakes import fake
from tests.support.otlp import OtlpReceiver, ReceivedSpan, receiver
from tests.support.procs import Proc, start_service, wait_until_ready

SERVER, CLIENT = 2, 3  # OTLP span kinds
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    yield from receiver()


@pytest.fixture(scope="module")
def traced(otlp: OtlpReceiver) -> Iterator[tuple[Proc, Proc, Proc]]:
    """(gateway, embedding, llm), every one exporting to ``otlp``."""
    tracing = {"OTLP_ENDPOINT": otlp.endpoint, **FAST_EXPORT}
    emb = start_service("embedding", {**EMBEDDING_ENV, **tracing}, wait_ready=False)
    llm = start_service("llm", {**LLM_ENV, **tracing}, wait_ready=False)
    procs = [emb, llm]
    try:
        wait_until_ready(emb)
        wait_until_ready(llm)
        gw = start_gateway({"embedding": emb.url, "llm": llm.url}, env=tracing)
        procs.append(gw)
        yield gw, emb, llm
    finally:
        for p in procs:
            p.stop()


def traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def one(spans: list[ReceivedSpan], service: str, name: str, kind: int = 1) -> ReceivedSpan:
    """The one span of ``service`` named ``name`` of ``kind`` (1 = internal)."""
    found = [s for s in spans if (s.service, s.name, s.kind) == (service, name, kind)]
    assert len(found) == 1, (service, name, [(s.service, s.name) for s in spans])
    return found[0]


def complete(service: str, route: str, names: set[str]) -> Callable[[list[ReceivedSpan]], bool]:
    """Whether a trace's spans hold the three request-path spans and ``names`` of ``service``."""
    path = {("gateway", SERVER), ("gateway", CLIENT), (service, SERVER)}

    def check(spans: list[ReceivedSpan]) -> bool:
        got = {(s.service, s.kind) for s in spans if s.name == f"POST {route}"}
        return path <= got and names <= {s.name for s in spans if s.service == service}

    return check


def log_lines(proc: Proc, request_id: str) -> list[dict[str, object]]:
    lines = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if request_id in line and line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def check_request_path(
    spans: list[ReceivedSpan], parent: str, service: str, route: str
) -> ReceivedSpan:
    """Gateway server -> gateway client -> service server; returns the service's server span."""
    gw_server = one(spans, "gateway", f"POST {route}", SERVER)
    gw_client = one(spans, "gateway", f"POST {route}", CLIENT)
    svc_server = one(spans, service, f"POST {route}", SERVER)
    assert gw_server.parent_id == parent
    assert gw_client.parent_id == gw_server.span_id
    assert gw_client.attributes["modelfleet.pool"] == service
    assert gw_client.attributes["http.response.status_code"] == 200
    assert svc_server.parent_id == gw_client.span_id
    assert gw_server.start_ns <= gw_client.start_ns <= svc_server.start_ns
    # (The service's span may end a moment after the gateway has read the last byte.)
    assert gw_client.end_ns <= gw_server.end_ns
    assert not [s for s in spans if s.name.startswith("fastapi")]  # no spans twice
    return svc_server


def test_an_embedding_request_is_one_trace_from_gateway_to_forward_pass(
    traced: tuple[Proc, Proc, Proc], otlp: OtlpReceiver
) -> None:
    gw, emb, _ = traced
    trace_id, parent, header = traceparent()
    rid = f"trace-emb-{secrets.token_hex(4)}"
    r = httpx.post(
        f"{gw.url}/v1/embeddings",
        json={"input": ["a traced sentence", "and another"]},
        headers={"traceparent": header, "x-request-id": rid},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    spans = otlp.wait_for(
        trace_id, complete("embedding", "/v1/embeddings", {"queue", "batch", "forward"})
    )
    assert {s.trace_id for s in spans} == {trace_id}
    server = check_request_path(spans, parent, "embedding", "/v1/embeddings")
    assert server.attributes["modelfleet.request_id"] == rid
    assert server.attributes["http.response.status_code"] == 200
    # Both inputs may share one batch or not: one queue/batch/forward set per batch they ran in.
    batches = [s for s in spans if s.name == "batch"]
    assert batches
    for batch in batches:
        assert batch.parent_id == server.span_id
        assert batch.attributes["batch.size"] >= batch.attributes["batch.request_items"] >= 1
        forward = [s for s in spans if s.name == "forward" and s.parent_id == batch.span_id]
        assert len(forward) == 1
        assert batch.start_ns <= forward[0].start_ns <= forward[0].end_ns <= batch.end_ns
    queues = [s for s in spans if s.name == "queue"]
    assert len(queues) == len(batches)
    assert all(q.parent_id == server.span_id for q in queues)
    assert sum(b.attributes["batch.request_items"] for b in batches) == 2
    # The trace id is in the service's (and the gateway's) JSON log line of this request.
    for proc in (emb, gw):
        lines = log_lines(proc, rid)
        assert lines, proc.log()
        assert all(line["trace_id"] == trace_id for line in lines), lines
        assert all(line["request_id"] == rid for line in lines)


def test_a_streamed_chat_is_one_trace_with_the_engine_spans(
    traced: tuple[Proc, Proc, Proc], otlp: OtlpReceiver
) -> None:
    gw, _, llm = traced
    trace_id, parent, header = traceparent()
    rid = f"trace-llm-{secrets.token_hex(4)}"
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"traceparent": header, "x-request-id": rid}
    usage = None
    with httpx.stream(
        "POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    assert usage is not None
    spans = otlp.wait_for(
        trace_id, complete("llm", "/v1/chat/completions", {"queue", "prefill", "decode"})
    )
    server = check_request_path(spans, parent, "llm", "/v1/chat/completions")
    queue, prefill = one(spans, "llm", "queue"), one(spans, "llm", "prefill")
    decode = one(spans, "llm", "decode")  # one for the decode phase, not one per token
    for span in (queue, prefill, decode):
        assert span.parent_id == server.span_id
    assert queue.end_ns == prefill.start_ns and prefill.end_ns == decode.start_ns
    assert server.start_ns <= queue.start_ns and decode.end_ns <= server.end_ns
    assert prefill.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert decode.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    lines = log_lines(llm, rid)
    assert lines and all(line["trace_id"] == trace_id for line in lines), llm.log()


def test_a_request_without_traceparent_starts_a_root_trace_at_the_gateway(
    traced: tuple[Proc, Proc, Proc], otlp: OtlpReceiver
) -> None:
    gw, emb, _ = traced
    rid = f"trace-root-{secrets.token_hex(4)}"
    r = httpx.post(
        f"{gw.url}/v1/embeddings", json={"input": "x"}, headers={"x-request-id": rid}, timeout=30
    )
    assert r.status_code == 200
    lines = log_lines(emb, rid)
    assert lines
    trace_id = str(lines[0]["trace_id"])
    spans = otlp.wait_for(trace_id, complete("embedding", "/v1/embeddings", {"forward"}))
    gw_server = next(s for s in spans if s.service == "gateway" and s.kind == SERVER)
    assert gw_server.parent_id == ""
    assert {s.service for s in spans} == {"gateway", "embedding"}


def test_a_retry_is_a_second_client_span_of_the_same_request(
    traced: tuple[Proc, Proc, Proc], otlp: OtlpReceiver
) -> None:
    """A replica answering 503 and the traced one in one pool: a request the gateway sent to
    the failing replica first has two client spans, the second the parent of the service's."""
    _, emb, _ = traced
    env = {"OTLP_ENDPOINT": otlp.endpoint, **FAST_EXPORT, "CIRCUIT_FAILURE_THRESHOLD": "100"}
    with (
        fake("status", status=503) as bad,
        gateway({"embedding": [bad.url, emb.url]}, env=env) as gw,
    ):
        retried = None
        for _ in range(12):
            trace_id, _, header = traceparent()
            r = httpx.post(f"{gw.url}/v1/embeddings", json={"input": "retry me"},
                           headers={"traceparent": header}, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            spans = otlp.wait_for(trace_id, complete("embedding", "/v1/embeddings", {"forward"}))
            clients = [s for s in spans if s.service == "gateway" and s.kind == CLIENT]
            if len(clients) == 2:
                retried = (spans, clients)
                break
        assert retried is not None, "no request went to the failing replica first"
    spans, clients = retried
    gw_server = one(spans, "gateway", "POST /v1/embeddings", SERVER)
    first, second = sorted(clients, key=lambda s: s.start_ns)
    assert first.parent_id == second.parent_id == gw_server.span_id
    assert (first.status, first.attributes["server.address"]) == (2, bad.url)
    assert (second.status, second.attributes["server.address"]) == (0, emb.url)
    assert first.end_ns <= second.start_ns
    assert one(spans, "embedding", "POST /v1/embeddings", SERVER).parent_id == second.span_id
