"""Batched logits processing equals the per-row formulas, whatever shares the batch."""

from __future__ import annotations

import torch

from modelfleet.decoding.sampling import Sampler, SamplingParams, logprobs_batch, process_batch

V = 50


def row(seed: int) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * 3


def reference(logits: torch.Tensor, p: SamplingParams, history: list[int]) -> torch.Tensor:
    out = logits.clone()
    for t in set(history):
        c = history.count(t)
        v = out[t]
        v = v / p.repetition_penalty if v > 0 else v * p.repetition_penalty
        out[t] = v - p.presence_penalty - p.frequency_penalty * c
    for t, b in p.logit_bias:
        out[t] += b
    return out


def test_penalties_and_bias_match_the_per_row_formulas_in_any_batch() -> None:
    params = [
        SamplingParams(max_tokens=1, temperature=0.0),
        SamplingParams(max_tokens=1, frequency_penalty=0.7, presence_penalty=0.3),
        SamplingParams(max_tokens=1, repetition_penalty=1.3, logit_bias=((3, 5.0), (7, -100.0))),
        SamplingParams(max_tokens=1, logit_bias=((1, 2.0),)),
    ]
    history = [4, 4, 9, 1, 4, 12]
    samplers = [Sampler(p) for p in params]
    for s in samplers:
        s.prepare(V, torch.device("cpu"))
        for t in history:
            s.accept(t)
    logits = torch.stack([row(i) for i in range(4)])
    batched = process_batch(logits, samplers)
    untouched = logits.clone()
    for i, p in enumerate(params):
        hist = history if p.penalised else []
        assert torch.allclose(batched[i], reference(untouched[i], p, hist), atol=1e-5), i
        alone = process_batch(logits[i : i + 1], [samplers[i]])[0]
        assert torch.equal(alone, batched[i])  # the batch does not change a row
    assert torch.equal(batched[0], logits[0])  # nothing asked, nothing changed


def test_logprobs_are_the_models_own_distribution() -> None:
    logits = torch.stack([row(0), row(1)])
    (a, b) = logprobs_batch(logits, [0, 1], [5, 6], [3, 0])
    lp = torch.log_softmax(logits, dim=-1)
    assert abs(a.logprob - float(lp[0, 5])) < 1e-6 and abs(b.logprob - float(lp[1, 6])) < 1e-6
    assert [t for t, _ in a.top] == torch.topk(lp[0], 3).indices.tolist() and b.top == ()
