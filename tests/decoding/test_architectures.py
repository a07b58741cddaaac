"""Ragged attention against transformers' own generate on tiny random models of several families.

The engine replaces attention, chunks prefill and packs sequences; greedy tokens must match the
reference implementation (sdpa, one sequence at a time) for Llama, Qwen2 and a sliding-window
Mistral, including prompts longer than a prefill chunk and the sliding window.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from modelfleet.decoding.engine import Engine
from modelfleet.decoding.loader import LoadedModel
from modelfleet.decoding.sampling import SamplingParams

SMALL = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


class IdsTokenizer:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


def build(config: Any) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return model


def reference(model: Any, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, len(prompt) :]]


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig(**SMALL),
        Qwen2Config(**SMALL),
        MistralConfig(**SMALL, sliding_window=6),
    ],
    ids=["llama", "qwen2", "mistral-sliding-window"],
)
def test_engine_matches_transformers_generate(config: Any) -> None:
    model = build(config)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 96, (n,), generator=g).tolist() for n in (5, 23, 41)]
    expected = [reference(model, p, 12) for p in prompts]
    lm = LoadedModel(
        model=model,
        tokenizer=IdsTokenizer(),
        device="cpu",
        dtype=torch.float32,
        context_window=256,
        eos_token_ids=frozenset(),
        revision="test",
        quantized=False,
    )
    engine = Engine(lm, max_batch_size=4, max_step_tokens=24, prefill_chunk=16)
    engine.start()
    try:

        async def run() -> list[str]:
            params = SamplingParams(max_tokens=12, temperature=0.0)
            done = await asyncio.gather(*(engine.submit(p, params).collect() for p in prompts))
            return [d.text for d in done]

        texts = asyncio.run(run())
    finally:
        engine.stop()
    assert texts == ["".join(f"<{t}>" for t in e) for e in expected]
