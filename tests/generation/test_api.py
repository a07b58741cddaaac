"""The generation service over HTTP: completions with the openai client, summaries, errors."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc

ARTICLE = (
    "The city council met on Tuesday to discuss the new public library. The library will open "
    "next spring in the old train station, which has stood empty for ten years. Architects kept "
    "the original clock tower and the iron roof. The building will hold 80,000 books, a "
    "children's wing and a cafe. Funding came from a regional grant and private donations. "
    "Several residents asked for longer opening hours on weekends, and the council agreed to "
    "open on Sundays. The first event will be a reading festival in May. "
)


JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(generation_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{generation_proc.url}/v1", api_key="unused", max_retries=0)


def test_completion_non_streaming_and_streaming_agree(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="m", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    text = r.choices[0].text
    assert "Paris" in text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens <= 8
    stream = client.completions.create(
        model="m", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_several_prompts_are_several_choices(client: openai.OpenAI) -> None:
    prompts = ["1, 2, 3, 4,", "Once upon a time", "The capital of France is"]
    r = client.completions.create(model="m", prompt=prompts, max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    alone = client.completions.create(model="m", prompt=prompts[2], max_tokens=6, temperature=0)
    assert r.choices[2].text == alone.choices[0].text  # batch-invariant
    stream = client.completions.create(
        model="m",
        prompt=prompts,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", "", ""]
    usage = None
    for c in stream:
        for ch in c.choices:
            texts[ch.index] += ch.text
        usage = c.usage or usage
    assert texts == [c.text for c in r.choices]
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens  # type: ignore[union-attr]


def test_stop_and_token_prompt(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="m", prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"]
    )
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == " 5, 6,"
    ids = client.completions.create(model="m", prompt=[16, 28, 216], max_tokens=3, temperature=0)
    assert ids.usage is not None and ids.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": 5}, 400, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100_000}, 400, "max_tokens"),
        ({"prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"prompt": "x", "best_of": 3, "echo": True}, 400, "echo"),
        ({"prompt": "word " * 2100, "max_tokens": 5}, 400, "messages"),
        ({"prompt": [10**9]}, 400, "prompt"),
        ({"prompt": "a \ud800 b"}, 400, "prompt"),
    ],
)
def test_bad_completion_requests(
    generation_proc: Proc, body: dict[str, object], status: int, param: str
) -> None:
    # json.dumps escapes a lone surrogate ("\ud800"); httpx's json= would refuse to send it.
    r = httpx.post(f"{generation_proc.url}/v1/completions", content=json.dumps(body), headers=JSON)
    err = assert_openai_error(r, status)
    assert str(err["param"]).startswith(param), err


def test_summary_of_a_short_text(generation_proc: Proc) -> None:
    r = httpx.post(
        f"{generation_proc.url}/v1/summarize",
        json={"input": ARTICLE, "max_tokens": 48},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["style"] == "paragraph" and body["summary"].strip()
    assert body["chunks"] == 1 and body["model_calls"] == 1
    assert body["usage"]["completion_tokens"] <= 48
    assert body["usage"]["prompt_tokens"] > 100


def test_long_input_is_chunked_not_rejected(generation_proc: Proc) -> None:
    text = ARTICLE * 3  # ~450 tokens against 160-token chunks
    r = httpx.post(
        f"{generation_proc.url}/v1/summarize",
        json={"input": text, "style": "bullets", "max_tokens": 48},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chunks"] >= 3 and body["model_calls"] == body["chunks"] + 1
    lines = body["summary"].splitlines()
    assert lines and all(line.startswith("- ") for line in lines)


@pytest.mark.parametrize(
    "body",
    [
        {"input": ""},
        {"input": "x", "style": "haiku"},
        {"input": "x", "max_tokens": -1},
        {"input": "x", "extra": 1},
    ],
)
def test_bad_summary_requests(generation_proc: Proc, body: dict[str, object]) -> None:
    assert_openai_error(httpx.post(f"{generation_proc.url}/v1/summarize", json=body), 400)
