"""Conversions between chat and completions for the pool fallbacks (pure functions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from modelfleet.errors import InvalidRequest
from services.gateway.fallback import (
    CHAT_VIA_GENERATION,
    COMPLETIONS_VIA_LLM,
    chat_request_as_completion,
    chat_to_prompt,
    completion_request_as_chat,
    convert_sse,
)


def test_chat_template_renders_roles_and_ends_with_the_assistant_turn() -> None:
    prompt = chat_to_prompt([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text",
                                                                           "text": "prime."}]},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Another?"},
    ])  # fmt: skip
    assert (
        prompt == "System: Be terse.\nUser: Name a prime.\nAssistant: 2\nUser: Another?\nAssistant:"
    )


def test_chat_request_keeps_sampling_and_adds_the_turn_stop() -> None:
    out = chat_request_as_completion({
        "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
        "max_completion_tokens": 9, "stop": "END", "stream": True, "tools": None,
    })  # fmt: skip
    assert out == {
        "prompt": "User: hi\nAssistant:",
        "temperature": 0,
        "max_tokens": 9,
        "stream": True,
        "stop": ["END", "\nUser:"],
    }


@pytest.mark.parametrize(
    "messages", [None, [], "hi", [{"content": "x"}], [{"role": "user", "content": 3}]]
)
def test_bad_messages_are_a_400_not_a_crash(messages: object) -> None:
    with pytest.raises(InvalidRequest):
        chat_request_as_completion({"messages": messages})


def test_completion_answer_becomes_a_chat_completion() -> None:
    chat = CHAT_VIA_GENERATION.reply({
        "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "flan",
        "choices": [{"index": 0, "text": " Paris.\nUser: and Spain?", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    })  # fmt: skip
    assert chat["object"] == "chat.completion" and chat["id"] == "chatcmpl-1"
    assert chat["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                "message": {"role": "assistant", "content": "Paris."}}]  # fmt: skip
    assert chat["usage"]["total_tokens"] == 6


def test_completions_via_chat_both_ways() -> None:
    req = completion_request_as_chat({"prompt": ["Say hi"], "max_tokens": 3, "echo": False})
    assert req == {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3}
    with pytest.raises(InvalidRequest):
        completion_request_as_chat({"prompt": ["a", "b"]})
    out = COMPLETIONS_VIA_LLM.reply({
        "id": "chatcmpl-9", "created": 1, "model": "smol",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "length"}],
    })  # fmt: skip
    assert out["object"] == "text_completion" and out["id"] == "cmpl-9"
    assert out["choices"][0]["text"] == "hi" and out["choices"][0]["finish_reason"] == "length"


async def _collect(chunks: list[bytes], chunk_factory: object) -> list[bytes]:
    async def source() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return [e async for e in convert_sse(source(), chunk_factory())]  # type: ignore[operator]


def test_sse_events_are_reframed_even_when_split_across_reads() -> None:
    def event(text: str, finish: str | None, end: bytes) -> bytes:
        choice = {"index": 0, "text": text, "finish_reason": finish}
        return b"data: " + orjson.dumps({"id": "cmpl-1", "model": "m", "choices": [choice]}) + end

    e1 = event("Hel", None, b"\n\n")
    e2 = event("lo", "stop", b"\r\n\r\n")
    stream = [e1[:17], e1[17:] + e2[:5], e2[5:], b": keep-alive\n\n", b"data: [DONE]\n\n"]
    out = asyncio.run(_collect(stream, CHAT_VIA_GENERATION.chunk))
    first, second = (orjson.loads(e.removeprefix(b"data: ")) for e in out[:2])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert second["choices"][0] == {"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}
    assert out[2:] == [b": keep-alive\n\n", b"data: [DONE]\n\n"]


def test_error_events_pass_unchanged() -> None:
    err = b'data: {"error":{"message":"boom","type":"server_error","code":null,"param":null}}\n\n'
    assert asyncio.run(_collect([err], COMPLETIONS_VIA_LLM.chunk)) == [err]
