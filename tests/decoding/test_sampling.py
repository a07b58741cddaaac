"""Per-sequence sampling: greedy, seeded draws, top-k / top-p truncation, repetition penalty."""

from __future__ import annotations

import torch

from modelfleet.decoding.sampling import Sampler, SamplingParams


def logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1000, generator=g) * 3


def draws(params: SamplingParams, n: int = 50) -> list[int]:
    s = Sampler(params)
    return [s(logits()) for _ in range(n)]


def test_temperature_zero_and_top_k_one_are_greedy() -> None:
    best = int(torch.argmax(logits()))
    assert set(draws(SamplingParams(max_tokens=1, temperature=0.0), 5)) == {best}
    assert set(draws(SamplingParams(max_tokens=1, temperature=1.5, top_k=1), 5)) == {best}


def test_same_seed_same_draws_different_seed_different_draws() -> None:
    p = SamplingParams(max_tokens=1, temperature=1.0, seed=42)
    assert draws(p) == draws(p)
    assert draws(p) != draws(SamplingParams(max_tokens=1, temperature=1.0, seed=43))


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    top5 = set(torch.topk(logits(), 5).indices.tolist())
    assert set(draws(SamplingParams(max_tokens=1, temperature=2.0, top_k=5, seed=1), 200)) <= top5
    # A nucleus this small keeps only the most likely token.
    best = int(torch.argmax(logits()))
    assert set(draws(SamplingParams(max_tokens=1, temperature=1.0, top_p=1e-6, seed=1))) == {best}


def test_repetition_penalty_moves_greedy_off_a_repeated_token() -> None:
    s = Sampler(SamplingParams(max_tokens=1, temperature=0.0, repetition_penalty=2.0))
    first, second = s(logits()), s(logits())
    assert first != second
