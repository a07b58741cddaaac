"""The llm service over HTTP with the official openai client: chat, streaming, stops, errors."""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc, wait_until

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(llm_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_proc.url}/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, messages: list[dict[str, str]], **kw: object) -> tuple[str, str]:
    r = client.chat.completions.create(model="m", messages=messages, **kw)  # type: ignore[call-overload]
    return r.choices[0].message.content or "", r.choices[0].finish_reason


TOKENS = "modelfleet_completion_tokens_total"


def metric(proc: Proc, name: str) -> float:
    text = httpx.get(f"{proc.url}/metrics").text
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert m, f"{name} not exported"
    return float(m.group(1))


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in (choice.message.content or "")
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    models = client.models.list()
    assert [m.id for m in models.data] == [r.model]


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    full, reason = chat(client, QUESTION, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == reason and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 12


def test_sse_wire_format_ends_with_done(llm_proc: Proc) -> None:
    body = {"messages": QUESTION, "max_tokens": 3, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{llm_proc.url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_multi_turn_and_system_prompt(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "Another one?"}]},
    ]
    text, _ = chat(client, messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert text.strip()


def test_max_tokens_gives_length_and_max_completion_tokens_is_honoured(
    client: openai.OpenAI,
) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    r = client.chat.completions.create(
        model="m", messages=story, max_completion_tokens=5, temperature=0
    )  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 5


def test_stop_sequences_inside_and_across_tokens(client: openai.OpenAI) -> None:
    full, _ = chat(client, QUESTION, max_tokens=16, temperature=0)
    assert "Paris" in full
    # "aris" ends inside the token " Paris"; " of France" spans several tokens.
    for stop in ("aris", [" of France", "zzz"]):
        text, reason = chat(client, QUESTION, max_tokens=16, temperature=0, stop=stop)
        first = stop if isinstance(stop, str) else stop[0]
        assert reason == "stop"
        assert text == full[: full.index(first)]
    streamed = client.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        stop="aris",
        stream=True,  # type: ignore[arg-type]
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == (full[: full.index("aris")])
    )


def test_greedy_output_does_not_depend_on_the_batch(client: openai.OpenAI, llm_proc: Proc) -> None:
    target = [{"role": "user", "content": "Describe a sunrise over the mountains."}]
    others = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "List the planets of the solar system in order, " * 6}],
        [{"role": "user", "content": "Why is the sky blue?"}],
    ]
    alone, _ = chat(client, target, max_tokens=16, temperature=0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # Same time as three others of different lengths.
        futs = [pool.submit(chat, client, m, max_tokens=16, temperature=0) for m in others]
        batched = pool.submit(chat, client, target, max_tokens=16, temperature=0)
        assert batched.result()[0] == alone
        [f.result() for f in futs]
        # Joining while the others are mid-generation: they have produced tokens (the counter
        # grows per decode step), far from their 3 x 32.
        generated = metric(llm_proc, TOKENS)
        futs = [pool.submit(chat, client, m, max_tokens=32, temperature=0) for m in others]
        wait_until(lambda: metric(llm_proc, TOKENS) >= generated + 3, 60, 0.01, "decoding")
        late = pool.submit(chat, client, target, max_tokens=16, temperature=0)
        assert late.result()[0] == alone
        [f.result() for f in futs]


def test_seeded_sampling_is_reproducible_in_a_batch(client: openai.OpenAI) -> None:
    kw = {"max_tokens": 16, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    alone, _ = chat(client, QUESTION, **kw)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        other = pool.submit(chat, client, [{"role": "user", "content": "Hi"}], **kw)
        again = pool.submit(chat, client, QUESTION, **kw)
        assert again.result()[0] == alone
        other.result()
    extra = {"top_k": 5}
    r = client.chat.completions.create(model="m", messages=QUESTION, extra_body=extra, **kw)  # type: ignore[arg-type]
    assert r.choices[0].message.content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({"messages": QUESTION, "n": 9}, "n"),
        ({"messages": QUESTION, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"messages": QUESTION, "logit_bias": {"x": 1}}, "logit_bias"),
        ({"messages": QUESTION, "logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"messages": QUESTION, "presence_penalty": 3}, "presence_penalty"),
        ({"messages": QUESTION, "max_completion_tokens": 10_000}, "max_completion_tokens"),
        ({"messages": QUESTION, "tool_choice": "required"}, "tool_choice"),
        ({"messages": QUESTION, "response_format": {"type": "json_schema"}}, "response_format"),
        (
            {
                "messages": QUESTION,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "objectx"}},
                },
            },
            "response_format",
        ),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages.0"),
        ({"messages": QUESTION, "max_tokens": -5}, "max_tokens"),
        ({"messages": QUESTION, "max_tokens": 10_000}, "max_tokens"),
        ({"messages": QUESTION, "temperature": 2.5}, "temperature"),
        ({"messages": QUESTION, "top_p": 0}, "top_p"),
        ({"messages": QUESTION, "stop": [1, 2]}, "stop"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "a \ud800 b"}]}, "messages"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(
    llm_proc: Proc, body: dict[str, object], param: str
) -> None:
    # json.dumps escapes a lone surrogate ("\ud800"); httpx's json= would refuse to send it.
    r = httpx.post(f"{llm_proc.url}/v1/chat/completions", content=json.dumps(body), headers=JSON)
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error"
    assert str(err["param"]).startswith(param), err


def test_unsupported_parameters_are_named(llm_proc: Proc) -> None:
    body = {
        "messages": QUESTION,
        "functions": [{"name": "f"}],
        "modalities": ["text", "audio"],
        "frobnicate": 1,
        "user": "accepted-and-ignored",
    }
    err = assert_openai_error(httpx.post(f"{llm_proc.url}/v1/chat/completions", json=body), 400)
    assert err["code"] == "unsupported_parameter"
    for name in ("functions", "modalities", "frobnicate"):
        assert name in str(err["message"])


def test_prompt_over_the_context_window_names_both_counts(
    client: openai.OpenAI, llm_proc: Proc
) -> None:
    long = [{"role": "user", "content": "word " * 1200}]
    r = httpx.post(f"{llm_proc.url}/v1/chat/completions", json={"messages": long, "max_tokens": 10})
    err = assert_openai_error(r, 400)
    assert err["code"] == "context_length_exceeded"
    assert "1024" in str(err["message"]) and "max_tokens=10" in str(err["message"])
    fits = [{"role": "user", "content": "word " * 900}]
    r = httpx.post(
        f"{llm_proc.url}/v1/chat/completions", json={"messages": fits, "max_tokens": 200}
    )
    assert_openai_error(r, 400)  # the prompt fits, prompt + max_tokens does not
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=long, max_tokens=10)  # type: ignore[arg-type]
    # ... and the service still answers.
    assert "Paris" in chat(client, QUESTION, max_tokens=12, temperature=0)[0]


def wait_metric(proc: Proc, name: str, value: float, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while metric(proc, name) != value:
        assert time.monotonic() < end, f"{name} != {value}"
        time.sleep(0.1)


def test_disconnect_mid_stream_frees_the_slot_and_full_queue_is_429(llm_proc: Proc) -> None:
    url = f"{llm_proc.url}/v1/chat/completions"
    body = {"messages": QUESTION, "max_tokens": 500, "stream": True, "ignore_eos": True}
    release = threading.Event()
    started = threading.Barrier(5)

    def hold() -> None:
        with httpx.stream("POST", url, json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # keep a reference: a collected iterator closes the response
            next(lines)
            started.wait(timeout=60)
            release.wait(60)
        # Leaving the block closes the connection mid-stream.

    threads = [threading.Thread(target=hold) for _ in range(8)]
    try:
        # 4 decode (MAX_BATCH_SIZE), then 4 wait (MAX_QUEUE): the next one is refused.
        for t in threads[:4]:
            t.start()
        started.wait(timeout=60)
        wait_metric(llm_proc, "modelfleet_sequences_running", 4, timeout=60)
        for t in threads[4:]:
            t.start()
        started.wait(timeout=60)
        wait_metric(llm_proc, "modelfleet_sequences_waiting", 4, timeout=60)
        r = httpx.post(url, json={**body, "stream": False}, timeout=30)
        err = assert_openai_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1 and err["type"] == "rate_limit_error"
    finally:
        release.set()
        for t in threads:
            if t.ident is not None:
                t.join(30)
    # Liveness, not speed: a step can take seconds when the machine is busy.
    wait_metric(llm_proc, "modelfleet_sequences_running", 0, timeout=60)
    wait_metric(llm_proc, "modelfleet_sequences_waiting", 0, timeout=60)
    answer = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
    assert "Paris" in httpx.post(url, json=answer, timeout=60).text
