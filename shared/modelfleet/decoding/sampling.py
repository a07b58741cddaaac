"""Per-sequence sampling: greedy, or temperature / top-k / top-p with a seeded generator.

Each sequence samples from its own logits row with its own ``torch.Generator``, so a seeded
request draws the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What a request asks of the decoder (validated by the API layer)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    repetition_penalty: float = 1.0  # > 1 discourages tokens this sequence already generated
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


class Sampler:
    """Draws the next token of one sequence."""

    __slots__ = ("_generator", "_seen", "params")

    def __init__(self, params: SamplingParams, device: str = "cpu") -> None:
        self.params = params
        self._seen: dict[int, None] = {}  # generated token ids, in order (repetition penalty)
        self._generator: torch.Generator | None = None
        if not params.greedy:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(seed & (2**63 - 1))

    def __call__(self, logits: torch.Tensor) -> int:
        """``logits``: the 1-D float row of this sequence's next-token scores."""
        p = self.params
        if p.repetition_penalty != 1.0 and self._seen:
            seen = torch.tensor(list(self._seen), device=logits.device)
            picked = logits[seen]
            logits = logits.index_copy(
                0,
                seen,
                torch.where(
                    picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty
                ),
            )
        token = self._draw(logits)
        if p.repetition_penalty != 1.0:
            self._seen[token] = None
        return token

    def _draw(self, logits: torch.Tensor) -> int:
        p = self.params
        if self._generator is None:
            return int(torch.argmax(logits).item())
        scores = logits.float() / p.temperature
        if 0 < p.top_k < scores.shape[-1]:
            kth = torch.topk(scores, p.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            sorted_probs = torch.softmax(sorted_scores, dim=-1)
            # Drop a token once the mass before it already reaches top_p (the top one stays).
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= p.top_p
            scores = scores.index_fill(0, order[drop], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator).item())
