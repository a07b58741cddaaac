"""Every request bounded (issue 15): each over-limit shape, to each process directly and through
the gateway, gets an OpenAI-shaped 4xx in well under a second.

The limits are the session services' settings (tests/conftest.py: the llm's MAX_TOKENS_CAP=512,
the encoders' MAX_INPUT_ITEMS=64) and the defaults otherwise (MAX_N=8, MAX_MESSAGES=256,
MAX_PROMPTS=16, MAX_INPUT_CHARS=100000, MAX_LABELS=64, MAX_BODY_BYTES=4 MiB); the request
models' own ceilings (stop: 16, top_n: 4096, top_k: 1024) and the JSON parser's nesting limit
are checked while parsing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import start_gateway
from tests.support.procs import Proc

CHARS = 100_001  # one over MAX_INPUT_CHARS
MSG = [{"role": "user", "content": "hi"}]
DEEP = "[" * 400 + "]" * 400  # past the JSON parser's recursion limit


def _deep(prefix: str) -> bytes:
    return (prefix + DEEP + "}").encode()


# (pool fixture, path, shape, body: a JSON-able object or raw bytes)
SHAPES: list[tuple[str, str, str, Any]] = [
    # llm
    ("llm", "/v1/chat/completions", "max_tokens", {"messages": MSG, "max_tokens": 10**6}),
    ("llm", "/v1/chat/completions", "n", {"messages": MSG, "n": 100}),
    ("llm", "/v1/chat/completions", "messages", {"messages": MSG * 300, "max_tokens": 1}),
    ("llm", "/v1/chat/completions", "messages-ceiling", {"messages": MSG * 5000}),
    (
        "llm",
        "/v1/chat/completions",
        "characters",
        {"messages": [{"role": "user", "content": "x" * CHARS}]},
    ),
    ("llm", "/v1/chat/completions", "stop", {"messages": MSG, "stop": ["s"] * 17}),
    (
        "llm",
        "/v1/chat/completions",
        "logit_bias",
        {"messages": MSG, "logit_bias": {str(i): 1 for i in range(301)}},
    ),
    (
        "llm",
        "/v1/chat/completions",
        "top_logprobs",
        {"messages": MSG, "logprobs": True, "top_logprobs": 21},
    ),
    ("llm", "/v1/chat/completions", "nesting", _deep('{"messages": ')),
    # generation
    ("generation", "/v1/completions", "max_tokens", {"prompt": "a", "max_tokens": 10**6}),
    ("generation", "/v1/completions", "n", {"prompt": "a", "n": 100}),
    ("generation", "/v1/completions", "prompts", {"prompt": ["a"] * 17, "max_tokens": 1}),
    ("generation", "/v1/completions", "characters", {"prompt": "x" * CHARS}),
    ("generation", "/v1/completions", "stop", {"prompt": "a", "stop": ["s"] * 17}),
    ("generation", "/v1/completions", "nesting", _deep('{"prompt": ')),
    ("generation", "/v1/summarize", "characters", {"input": "x" * 400_001}),
    ("generation", "/v1/summarize", "max_tokens", {"input": "a b c", "max_tokens": 10**6}),
    # embedding
    ("embedding", "/v1/embeddings", "input-items", {"input": ["a"] * 65}),
    ("embedding", "/v1/embeddings", "input-ceiling", {"input": ["a"] * 5000}),
    ("embedding", "/v1/embeddings", "characters", {"input": "x" * CHARS}),
    ("embedding", "/v1/embeddings", "nesting", _deep('{"input": ')),
    ("embedding", "/v1/similarity", "documents", {"query": "q", "documents": ["d"] * 65}),
    ("embedding", "/v1/similarity", "top_n", {"query": "q", "documents": ["d"], "top_n": 5000}),
    # classification
    ("classification", "/v1/classify", "input-items", {"input": ["a"] * 65, "task": "sentiment"}),
    ("classification", "/v1/classify", "characters", {"input": "x" * CHARS, "task": "sentiment"}),
    (
        "classification",
        "/v1/classify",
        "labels",
        {"input": "a", "labels": [f"l{i}" for i in range(65)]},
    ),
    ("classification", "/v1/classify", "top_k", {"input": "a", "task": "sentiment", "top_k": 2000}),
    ("classification", "/v1/classify", "nesting", _deep('{"input": ')),
]
BODY_PATHS = {
    "llm": "/v1/chat/completions",
    "generation": "/v1/completions",
    "embedding": "/v1/embeddings",
    "classification": "/v1/classify",
}
FIXTURES = {p: f"{p}_proc" for p in BODY_PATHS}


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[dict[str, Proc]]:
    procs = {pool: request.getfixturevalue(name) for pool, name in FIXTURES.items()}
    gw = start_gateway({pool: p.url for pool, p in procs.items()})
    try:
        yield {**procs, "gateway": gw}
    finally:
        gw.stop()


def _target(fleet: dict[str, Proc], pool: str, via: str) -> Proc:
    return fleet["gateway"] if via == "gateway" else fleet[pool]


@pytest.mark.parametrize("via", ["direct", "gateway"])
@pytest.mark.parametrize(
    ("pool", "path", "shape", "body"), SHAPES, ids=[f"{p}{path}:{s}" for p, path, s, _ in SHAPES]
)
def test_each_over_limit_shape_is_a_fast_4xx(
    fleet: dict[str, Proc], via: str, pool: str, path: str, shape: str, body: Any
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    url = _target(fleet, pool, via).url + path
    with httpx.Client(timeout=10) as client:
        t = time.perf_counter()
        r = client.post(url, content=content, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - t
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert_openai_error(r, r.status_code)
    assert len(r.content) < 2048, len(r.content)
    assert elapsed < 1.0, f"{shape}: {elapsed:.2f}s"


@pytest.mark.parametrize("via", ["direct", "gateway"])
@pytest.mark.parametrize("pool", list(BODY_PATHS))
def test_a_body_over_max_body_bytes_is_a_413_before_it_is_read(
    fleet: dict[str, Proc], via: str, pool: str
) -> None:
    proc = _target(fleet, pool, via)
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(
            f"POST {BODY_PATHS[pool]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {5 << 20}\r\n\r\n".encode()
        )
        data = b""
        while b"payload_too_large" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"payload_too_large" in data
    assert time.perf_counter() - t < 1.0
