"""The OpenAI chat and completion routes through the gateway to the real decoder services.

The llm and generation services load the real packaged model (about 15 s for this module);
test_faults.py and test_proxy.py cover timings only paced fake backends can produce.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai

from tests.gateway.conftest import gateway
from tests.support.procs import Proc, free_port

CHAT: list[Any] = [{"role": "user", "content": "Say hi in three words."}]
# Real decoders answer /ready from a busy event loop: on a loaded test machine the fault tests'
# 0.5 s health timeout marks a healthy replica down (then chat falls back or answers 503).
PATIENT = {"HEALTH_TIMEOUT_S": "5", "HEALTH_INTERVAL_S": "1"}


def test_openai_client_through_the_gateway_to_both_decoders(
    llm_proc: Proc, generation_proc: Proc, redis_proc: Proc
) -> None:
    with gateway(
        {"llm": llm_proc.url, "generation": generation_proc.url}, redis_proc, PATIENT
    ) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        chat = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=CHAT, max_tokens=8, temperature=0
        )
        assert chat.headers["x-cache"] in ("miss", "hit")
        assert chat.parse().choices[0].message.content
        again = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=CHAT, max_tokens=8, temperature=0
        )
        assert again.parse().choices[0].message.content == chat.parse().choices[0].message.content
        text = client.completions.create(model="x", prompt="The sky is", max_tokens=6)
        assert text.object == "text_completion" and text.choices[0].text
        stream = client.chat.completions.create(
            model="smollm2", messages=CHAT, max_tokens=8, stream=True
        )
        deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(deltas)
        names = {m.model_extra["service"] for m in client.models.list().data if m.model_extra}
        assert {"llm", "generation"} <= names


def test_chat_is_served_by_the_real_generation_service_when_llm_is_down(
    generation_proc: Proc,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway({"llm": dead, "generation": generation_proc.url}, env=PATIENT) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=CHAT, max_tokens=8, temperature=0
        )
        assert raw.headers["x-fleet-degraded"] == "llm-unavailable; served-by=generation"
        chat = raw.parse()
        assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
        assert chat.usage is not None and chat.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="smollm2", messages=CHAT, max_tokens=8, stream=True
        )
        chunks = [c for c in stream]
        assert {c.object for c in chunks} == {"chat.completion.chunk"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # What completions cannot honour is not silently dropped: no fallback, a 503.
        for extra in (
            {"response_format": {"type": "json_object"}},
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            {"logprobs": True},
        ):
            r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                           json={"messages": CHAT, "max_tokens": 4, **extra})  # fmt: skip
            assert r.status_code == 503 and "x-fleet-degraded" not in r.headers, (extra, r.text)
            assert r.headers["retry-after"]


def test_completions_are_served_by_the_real_llm_service_when_generation_is_down(
    llm_proc: Proc,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway({"generation": dead, "llm": llm_proc.url}, env=PATIENT) as gw:
        r = httpx.post(
            gw.url + "/v1/completions",
            json={"prompt": "Name a colour.", "max_tokens": 6, "temperature": 0},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-fleet-degraded"] == "generation-unavailable; served-by=llm"
        body = r.json()
        assert body["object"] == "text_completion" and body["choices"][0]["text"]


def test_openai_parameters_pass_through_the_gateway(
    llm_proc: Proc, generation_proc: Proc, redis_proc: Proc
) -> None:
    """n, logprobs, penalties, logit_bias, seed, stops, json_schema, tools, usage in streams."""
    import json

    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 10}},
                "required": ["q"],
            },
        },
    }
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    with gateway(
        {"llm": llm_proc.url, "generation": generation_proc.url}, redis_proc, PATIENT
    ) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model="m", messages=CHAT, max_completion_tokens=6, temperature=0.7, seed=5, n=2,
            logprobs=True, top_logprobs=2, presence_penalty=0.5, frequency_penalty=0.5,
            logit_bias={"0": -100}, stop=["\n\n", "###"], user="u",
        )  # fmt: skip
        assert len(r.choices) == 2 and r.choices[1].logprobs and r.choices[1].logprobs.content
        js = client.chat.completions.create(
            model="m", messages=CHAT, max_tokens=20, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
        )  # fmt: skip
        assert isinstance(json.loads(js.choices[0].message.content or ""), dict)
        call = client.chat.completions.create(
            model="m", messages=CHAT, max_tokens=40, temperature=0, tools=[tool],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "lookup"}},
        )  # fmt: skip
        assert call.choices[0].message.tool_calls
        stream = client.chat.completions.create(
            model="m", messages=CHAT, max_tokens=40, temperature=0, tools=[tool],  # type: ignore[list-item]
            tool_choice="required", parallel_tool_calls=False, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
        assert chunks[-1].usage is not None
        text = client.completions.create(model="m", prompt="0", n=2, logprobs=1)
        assert len(text.choices) == 2 and text.usage and text.usage.completion_tokens <= 32
