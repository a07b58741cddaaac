"""Per-sequence sampling: greedy, seeded draws, top-k / top-p truncation, repetition penalty."""

from __future__ import annotations

import torch

from modelfleet.decoding.sampling import Sampler, SamplingParams, draw_batch


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


def test_the_exponential_race_draws_from_the_distribution() -> None:
    probs = torch.tensor([0.5, 0.3, 0.2])
    s = Sampler(SamplingParams(max_tokens=1, temperature=1.0, seed=5))
    got = [s(probs.log()) for _ in range(6000)]
    for token, p in enumerate(probs.tolist()):
        assert abs(got.count(token) / len(got) - p) < 0.03, (token, got.count(token))


def test_a_seeded_row_draws_the_same_alone_and_in_any_batch() -> None:
    """Truncation and noise are per row: the neighbours' settings change nothing."""
    mine = SamplingParams(max_tokens=1, temperature=0.8, top_p=0.9, top_k=40, seed=11)
    others = [
        SamplingParams(max_tokens=1, temperature=0.0),
        SamplingParams(max_tokens=1, temperature=1.7, top_p=1e-6, seed=2),
        SamplingParams(max_tokens=1, temperature=1.2, top_k=3),
    ]
    alone = Sampler(mine)
    solo = [draw_batch(logits()[None], [alone])[0] for _ in range(30)]
    crowd = [Sampler(mine), *(Sampler(p) for p in others)]
    batched = []
    for _ in range(30):
        out = draw_batch(torch.stack([logits()] * 4), crowd)
        batched.append(out[0])
        best = int(torch.argmax(logits()))
        assert out[1] == best and out[2] == best  # greedy; a nucleus of one token
        assert out[3] in set(torch.topk(logits(), 3).indices.tolist())
    assert solo == batched and len(set(solo)) > 1
