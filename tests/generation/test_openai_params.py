"""OpenAI completions parameters on the real generation service, through the openai client."""

from __future__ import annotations

import openai
import pytest

from tests.support.procs import Proc


@pytest.fixture(scope="module")
def client(generation_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{generation_proc.url}/v1", api_key="unused", max_retries=0)


def test_max_tokens_defaults_to_openais_16(client: openai.OpenAI) -> None:
    r = client.completions.create(model="m", prompt="0", extra_body={"ignore_eos": True})
    assert r.usage is not None and r.usage.completion_tokens == 16
    assert r.choices[0].finish_reason == "length"


def test_n_per_prompt_logprobs_and_their_stream(client: openai.OpenAI) -> None:
    prompts = ["1, 2, 3,", "The sky is"]
    kw = {"prompt": prompts, "max_tokens": 5, "temperature": 0, "n": 2, "logprobs": 2}
    r = client.completions.create(model="m", **kw)  # type: ignore[call-overload]
    # OpenAI's numbering: prompt i's choice j is index i * n + j; each prompt counted once.
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text
    alone = client.completions.create(model="m", prompt=prompts[1], max_tokens=5, temperature=0)
    assert r.choices[2].text == alone.choices[0].text
    assert r.usage is not None and alone.usage is not None
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)
    stream = client.completions.create(model="m", stream=True, **kw)  # type: ignore[call-overload]
    tokens: dict[int, list[str]] = {i: [] for i in range(4)}
    for chunk in stream:
        for c in chunk.choices:
            if c.logprobs and c.logprobs.tokens:
                tokens[c.index] += c.logprobs.tokens
    assert tokens == {c.index: c.logprobs.tokens for c in r.choices if c.logprobs}


def test_seeded_completion_with_penalties_is_reproducible(client: openai.OpenAI) -> None:
    kw = {
        "prompt": "Once upon a time",
        "max_tokens": 12,
        "temperature": 0.8,
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "stop": ["\n\n", "THE END"],
        "user": "u1",
    }
    a = client.completions.create(model="m", **kw)  # type: ignore[call-overload]
    b = client.completions.create(model="m", **kw)  # type: ignore[call-overload]
    assert a.choices[0].text == b.choices[0].text


def test_n_over_the_limit_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="m", prompt="x", n=64)
    assert "n=64" in str(exc.value) and "limit" in str(exc.value)
