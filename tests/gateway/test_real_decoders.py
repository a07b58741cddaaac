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


def test_openai_client_through_the_gateway_to_both_decoders(
    llm_proc: Proc, generation_proc: Proc, redis_proc: Proc
) -> None:
    with gateway({"llm": llm_proc.url, "generation": generation_proc.url}, redis_proc) as gw:
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
    with gateway({"llm": dead, "generation": generation_proc.url}) as gw:
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


def test_completions_are_served_by_the_real_llm_service_when_generation_is_down(
    llm_proc: Proc,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway({"generation": dead, "llm": llm_proc.url}) as gw:
        r = httpx.post(
            gw.url + "/v1/completions",
            json={"prompt": "Name a colour.", "max_tokens": 6, "temperature": 0},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-fleet-degraded"] == "generation-unavailable; served-by=llm"
        body = r.json()
        assert body["object"] == "text_completion" and body["choices"][0]["text"]
