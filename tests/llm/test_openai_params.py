"""OpenAI chat parameters on the real llm service, through the official openai client.

n, logprobs/top_logprobs, penalties, logit_bias, seeds, structured output (xgrammar), tools,
and what streaming carries. Every answer is parsed by the client's typed objects.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.support.procs import Proc

ASK = [{"role": "user", "content": "Tell me about the ocean."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 12}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
CITY = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(llm_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_proc.url}/v1", api_key="unused", max_retries=0)


def create(client: openai.OpenAI, **kw: Any) -> Any:
    kw.setdefault("messages", ASK)
    return client.chat.completions.create(model="m", **kw)


def test_n_choices_share_the_prompt_and_seed_reproduces_them(client: openai.OpenAI) -> None:
    greedy = create(client, max_tokens=8, temperature=0)
    many = create(client, max_tokens=8, temperature=0, n=3)
    # Forked from one prefill, each greedy choice is exactly the single greedy answer.
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert {c.message.content for c in many.choices} == {greedy.choices[0].message.content}
    assert many.usage.prompt_tokens == greedy.usage.prompt_tokens
    assert many.usage.completion_tokens == 3 * greedy.usage.completion_tokens
    kw = {"max_tokens": 10, "temperature": 1.0, "n": 3, "seed": 7}
    first = [c.message.content for c in create(client, **kw).choices]
    assert len(set(first)) > 1, first  # choice i samples with seed + i
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        noise = pool.submit(create, client, max_tokens=12, temperature=1.0)
        again = pool.submit(create, client, **kw)
        assert [c.message.content for c in again.result().choices] == first
        noise.result()


def test_logprobs_and_top_logprobs_non_streamed_and_streamed(client: openai.OpenAI) -> None:
    r = create(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.top_logprobs[0].token == t.token  # greedy picks the likeliest
        assert bytes(t.bytes or []).decode() == t.token
    plain = create(client, max_tokens=6, temperature=0, logprobs=False)
    assert plain.choices[0].logprobs is None
    stream = create(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, stream=True)
    streamed = [
        t
        for c in stream
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_penalties_and_logit_bias_change_greedy_output(client: openai.OpenAI) -> None:
    # Past its end of sequence the small model loops; penalties must break the loop.
    loop = {
        "max_tokens": 24,
        "temperature": 0,
        "logprobs": True,
        "extra_body": {"ignore_eos": True},
    }
    base = create(client, **loop)
    tokens = [t.token for t in base.choices[0].logprobs.content]
    assert len(set(tokens)) < len(tokens) - 4, tokens
    for kw in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        r = create(client, **loop, **kw)
        fewer = [t.token for t in r.choices[0].logprobs.content]
        assert len(set(fewer)) > len(set(tokens)), (kw, fewer, tokens)
    rep = {**loop, "extra_body": {"ignore_eos": True, "repetition_penalty": 1.5}}
    assert len({t.token for t in create(client, **rep).choices[0].logprobs.content}) > len(
        set(tokens)
    )
    # Ban the first greedy token: the answer starts differently; favour one: it is all we get.
    first = base.choices[0].logprobs.content[0].token
    banned = create(
        client, max_tokens=3, temperature=0, logprobs=True, logit_bias={str(_token_id(first)): -100}
    )
    assert banned.choices[0].logprobs.content[0].token != first
    forced = create(client, max_tokens=4, temperature=0, logit_bias={str(_token_id(" ok")): 100})
    assert forced.choices[0].message.content == " ok ok ok ok"


@functools.cache
def _token_id(text: str) -> int:
    """The id of a one-token text in the served model's tokenizer."""
    from transformers import AutoTokenizer

    from modelfleet.decoding.loader import gguf_cache_dir
    from modelfleet.decoding.settings import DecoderSettings
    from modelfleet.resolve import packaged_llm_gguf

    tok = AutoTokenizer.from_pretrained(
        gguf_cache_dir(packaged_llm_gguf(), DecoderSettings().cache_dir)
    )
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == 1, ids
    return int(ids[0])


def test_json_object_and_strict_json_schema_always_parse(client: openai.OpenAI) -> None:
    r = create(client, max_tokens=64, temperature=0, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
    }
    people = create(
        client,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=80,
        temperature=1.0,
        seed=3,
        n=3,
        response_format=fmt,
    )
    for choice in people.choices:
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    short = create(client, max_tokens=3, temperature=0, response_format=fmt)
    assert short.choices[0].finish_reason == "length"  # cut short: documented not to parse


def test_streamed_text_splits_only_on_whole_characters(client: openai.OpenAI) -> None:
    # The grammar forces characters the vocabulary has no single tokens for: byte pieces.
    text = "你好，世界 😀 ok"  # noqa: RUF001
    schema = {"type": "object", "properties": {"g": {"const": text}}, "required": ["g"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "greeting", "schema": schema}}
    full = create(client, max_tokens=60, temperature=0, response_format=fmt, logprobs=True)
    assert json.loads(full.choices[0].message.content) == {"g": text}
    partial = [t for t in full.choices[0].logprobs.content if "\ufffd" in t.token]
    assert partial, "expected tokens that hold part of a character"
    stream = create(client, max_tokens=60, temperature=0, response_format=fmt, stream=True)
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == full.choices[0].message.content


def _validate_call(call: Any, tool: dict[str, Any]) -> None:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_tool_choice_named_required_auto_none(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    r = create(
        client,
        messages=CITY,
        tools=[WEATHER, TIME],
        tool_choice=named,
        temperature=0,
        max_tokens=60,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    _validate_call(call, TIME)
    r = create(
        client,
        messages=CITY,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    assert r.choices[0].finish_reason == "tool_calls"
    _validate_call(r.choices[0].message.tool_calls[0], WEATHER)
    auto = create(client, messages=CITY, tools=[WEATHER], temperature=0, max_tokens=40)
    for call in auto.choices[0].message.tool_calls or []:
        _validate_call(call, WEATHER)
    none = create(
        client, messages=CITY, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=8
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def test_tool_call_deltas_stream_and_tool_results_are_accepted_back(client: openai.OpenAI) -> None:
    kw = {
        "messages": CITY,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 60,
    }
    full = create(client, **kw).choices[0].message.tool_calls[0]
    chunks = list(create(client, stream=True, stream_options={"include_usage": True}, **kw))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0
    assert calls[0].function.name == full.function.name
    assert calls[0].function.arguments == full.function.arguments
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert (
        finishes == ["tool_calls"] and chunks[-1].usage and chunks[-1].usage.completion_tokens > 0
    )
    follow = [
        *CITY,
        {"role": "assistant", "content": None, "tool_calls": [full.model_dump()]},
        {"role": "tool", "tool_call_id": full.id, "content": '{"temp_c": 21, "sky": "clear"}'},
    ]
    answer = create(client, messages=follow, tools=[WEATHER], temperature=0, max_tokens=12)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_user_and_max_completion_tokens_and_stops(client: openai.OpenAI) -> None:
    r = create(client, max_completion_tokens=4, temperature=0, user="someone", stop=["zzz", "qqq"])
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"
