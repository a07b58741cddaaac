# ruff: noqa: RUF001 - Chinese text uses fullwidth punctuation
"""/tokenize and /detokenize on the decoder services, and Chinese text through chat and
completions: exact UTF-8 round trips, token counts that match usage, whole-character streams."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc

ZH = "请用一句话介绍长城。"
MESSAGES: list[Any] = [{"role": "system", "content": "你是一个乐于助人的助手。"},
                       {"role": "user", "content": ZH}]  # fmt: skip


def post(proc: Proc, path: str, body: Any) -> httpx.Response:
    return httpx.post(proc.url + path, json=body, timeout=60)


@pytest.mark.parametrize("name", ["llm_proc", "generation_proc"])
def test_tokenize_round_trips_chinese_and_emoji_exactly(
    name: str, request: pytest.FixtureRequest
) -> None:
    proc: Proc = request.getfixturevalue(name)
    text = "长城是中国古代的军事防御工程 🧱，全长两万多公里。"
    tok = post(proc, "/tokenize", {"prompt": text}).json()
    assert tok["count"] == len(tok["tokens"]) > 0
    assert tok["max_model_len"] == (1024 if name == "llm_proc" else 2048)
    assert post(proc, "/detokenize", {"tokens": tok["tokens"]}).json() == {"prompt": text}
    err = assert_openai_error(post(proc, "/detokenize", {"tokens": [10**8]}), 400)
    assert err["param"] == "tokens"


def test_tokenize_messages_counts_what_chat_bills(llm_proc: Proc) -> None:
    tok = post(llm_proc, "/tokenize", {"messages": MESSAGES}).json()
    client = openai.OpenAI(base_url=f"{llm_proc.url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1,
                                          temperature=0)  # fmt: skip
    assert chat.usage is not None and chat.usage.prompt_tokens == tok["count"]
    no_prompt = post(llm_proc, "/tokenize", {"messages": MESSAGES,
                                             "add_generation_prompt": False}).json()  # fmt: skip
    assert no_prompt["count"] < tok["count"]
    both = post(llm_proc, "/tokenize", {"prompt": "x", "messages": MESSAGES})
    assert assert_openai_error(both, 400)["param"] == "prompt"


def test_completion_prompt_tokens_match_tokenize(generation_proc: Proc) -> None:
    tok = post(generation_proc, "/tokenize", {"prompt": ZH}).json()
    client = openai.OpenAI(base_url=f"{generation_proc.url}/v1", api_key="u", max_retries=0)
    out = client.completions.create(model="m", prompt=ZH, max_tokens=4, temperature=0)
    assert out.usage is not None and out.usage.prompt_tokens == tok["count"]
    # Token ids as the prompt: the same count, the same greedy text.
    by_ids = client.completions.create(model="m", prompt=tok["tokens"], max_tokens=4,
                                       temperature=0)  # fmt: skip
    assert by_ids.choices[0].text == out.choices[0].text


def test_chinese_chat_streams_whole_characters(llm_proc: Proc) -> None:
    client = openai.OpenAI(base_url=f"{llm_proc.url}/v1", api_key="unused", max_retries=0)
    ask: list[Any] = [{"role": "user", "content": "用中文写一首关于月亮的短诗。"}]
    full = client.chat.completions.create(model="m", messages=ask, max_tokens=24, temperature=0)
    text = full.choices[0].message.content or ""
    stream = client.chat.completions.create(
        model="m", messages=ask, max_tokens=24, temperature=0, stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)  # no character split across events
