"""Sampling: per-sequence state, batched logits processing, then a per-sequence draw.

Each step the engine hands :func:`process_batch` the logits rows of every sequence that samples
and their :class:`Sampler` objects. Penalties, ``logit_bias`` and grammar masks are applied to
the rows that need them as whole-tensor operations (one gather/stack per kind, no loop over the
vocabulary), so the work per step does not grow with the number of penalised tokens and stays
expressible on a GPU. Then :func:`draw_batch` draws every row on the logits' device, each
sequence with its own ``torch.Generator`` (on that device): a seeded request draws the same
tokens whatever else shares its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every generated token
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's and the k likeliest
    grammar: Any = None  # an xgrammar CompiledGrammar that constrains the output
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


class Sampler:
    """Per-sequence sampling state: the generator, token counts, bias row, grammar matcher."""

    __slots__ = ("_generator", "bias", "counts", "matcher", "params", "plain")

    def __init__(self, params: SamplingParams, device: str = "cpu") -> None:
        self.params = params
        # Greedy with nothing to apply or report: the engine takes a batched argmax for these
        # rows and never calls draw() or accept() for them.
        self.plain = (
            params.greedy
            and not params.penalised
            and not params.logit_bias
            and params.grammar is None
            and params.logprobs is None
        )
        self.counts: torch.Tensor | None = None  # generated-token counts, built on first use
        self.bias: torch.Tensor | None = None
        self.matcher: Any = None
        if params.grammar is not None:
            import xgrammar as xgr

            self.matcher = xgr.GrammarMatcher(params.grammar)
        self._generator: torch.Generator | None = None
        if not params.greedy:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(seed & (2**63 - 1))

    def __call__(self, logits: torch.Tensor) -> int:
        """Process and draw from one 1-D logits row, then record the token (tests, one-offs)."""
        token = self.draw(process_batch(logits[None], [self])[0])
        self.accept(token)
        return token

    def prepare(self, vocab: int, device: torch.device) -> None:
        """Allocate the per-sequence rows once the vocabulary size is known."""
        p = self.params
        if p.penalised and self.counts is None:
            self.counts = torch.zeros(vocab, dtype=torch.int32, device=device)
        if p.logit_bias and self.bias is None:
            bias = torch.zeros(vocab, dtype=torch.float32)
            ids = torch.tensor([t for t, _ in p.logit_bias], dtype=torch.long)
            bias[ids] = torch.tensor([b for _, b in p.logit_bias], dtype=torch.float32)
            self.bias = bias.to(device)

    def accept(self, token: int) -> None:
        """Record a drawn token (penalty counts, grammar state)."""
        if self.counts is not None:
            self.counts[token] += 1
        if self.matcher is not None:
            self.matcher.accept_token(token)

    def draw(self, logits: torch.Tensor) -> int:
        """One token from an already processed 1-D row (see :func:`draw_batch`)."""
        return draw_batch(logits[None], [self])[0]


def draw_batch(logits: torch.Tensor, samplers: Sequence[Sampler]) -> list[int]:
    """One token per row of processed ``logits`` [B, V], drawn where the logits are.

    Greedy rows take the argmax. Sampled rows are scaled by their temperature and truncated
    (top-k, then top-p) as whole-tensor operations, then each draws with its own generator by
    the exponential race: the argmax of ``p / E`` with ``E ~ Exp(1)`` is an exact draw from
    ``p`` (vLLM samples this way on the GPU). Every operation is row-wise and each row's noise
    comes from its sequence's generator, so a seeded sequence draws the same tokens whatever
    shares its batch; the only host sync is the final ``tolist``.
    """
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, s in enumerate(samplers) if s._generator is not None]
    if not sampled:
        out: list[int] = tokens.tolist()
        return out
    dev, vocab = logits.device, logits.shape[-1]
    params = [samplers[i].params for i in sampled]
    idx = torch.tensor(sampled, device=dev)

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, device=dev).unsqueeze(-1)

    scores = logits.index_select(0, idx).float() / column([p.temperature for p in params])
    ks = [p.top_k if 0 < p.top_k < vocab else 0 for p in params]
    if any(ks):
        top = torch.topk(scores, max(ks), dim=-1).values
        kth = top.gather(1, column([max(k, 1) - 1 for k in ks]))
        kth = kth.masked_fill(column(ks) == 0, float("-inf"))
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if any(p.top_p < 1.0 for p in params):
        ordered, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # Drop a token once the mass before it already reaches top_p (the top one stays).
        drop = probs.cumsum(dim=-1) - probs >= column([p.top_p for p in params])
        drop &= column([p.top_p < 1.0 for p in params])
        scores = scores.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    race = torch.stack(
        [
            torch.empty(vocab, device=dev).exponential_(generator=samplers[i]._generator)
            for i in sampled
        ]
    ).clamp_min_(torch.finfo(torch.float32).tiny)  # an exact 0 would turn 0 / 0 into NaN
    tokens = tokens.index_copy(0, idx, (probs / race).argmax(dim=-1))
    out = tokens.tolist()
    return out


def process_batch(logits: torch.Tensor, samplers: Sequence[Sampler]) -> torch.Tensor:
    """Apply every sampler's penalties, bias and grammar mask to its row of ``logits`` [B, V].

    Rows that need nothing are left untouched (and no copy is made when no row needs anything),
    so greedy sequences without options see exactly the model's logits.
    """
    vocab = logits.shape[-1]
    pen = [i for i, s in enumerate(samplers) if s.params.penalised]
    bias = [i for i, s in enumerate(samplers) if s.params.logit_bias]
    masked = [i for i, s in enumerate(samplers) if s.matcher is not None]
    if not (pen or bias or masked):
        return logits
    logits = logits.clone()
    for s in samplers:
        s.prepare(vocab, logits.device)
    if pen:
        idx = torch.tensor(pen, device=logits.device)
        rows = logits.index_select(0, idx)
        counts = torch.stack([samplers[i].counts for i in pen]).float()  # type: ignore[misc]
        seen = counts > 0
        col = torch.tensor(
            [
                [samplers[i].params.repetition_penalty for i in pen],
                [samplers[i].params.presence_penalty for i in pen],
                [samplers[i].params.frequency_penalty for i in pen],
            ],
            device=logits.device,
        ).unsqueeze(-1)
        rep, presence, frequency = col[0], col[1], col[2]
        # HF/vLLM's repetition penalty (divide positive logits, multiply negative ones), then
        # OpenAI's additive presence and frequency penalties.
        rows = torch.where(seen, torch.where(rows > 0, rows / rep, rows * rep), rows)
        rows = rows - presence * seen - frequency * counts
        logits.index_copy_(0, idx, rows)
    if bias:
        idx = torch.tensor(bias, device=logits.device)
        logits.index_add_(0, idx, torch.stack([samplers[i].bias for i in bias]))  # type: ignore[misc]
    if masked:
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(len(samplers), vocab)
        for i in masked:
            samplers[i].matcher.fill_next_token_bitmask(bitmask, i)
        xgr.apply_token_bitmask_inplace(
            logits, bitmask.to(logits.device), vocab_size=vocab, indices=masked
        )
    return logits


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability and the likeliest alternatives at its step."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def logprobs_batch(
    logits: torch.Tensor, rows: Sequence[int], tokens: Sequence[int], ks: Sequence[int]
) -> list[TokenLogprob]:
    """Log-probabilities of ``tokens`` under the model's own distribution (before penalties,
    bias, masks and temperature, as vLLM reports them), with the top ``k`` of each row."""
    idx = torch.tensor(list(rows), device=logits.device)
    lp = torch.log_softmax(logits.index_select(0, idx).float(), dim=-1)
    chosen = lp.gather(1, torch.tensor([[t] for t in tokens], device=lp.device))[:, 0].tolist()
    kmax = max(ks)
    top_v: list[list[float]] = []
    top_i: list[list[int]] = []
    if kmax:
        top = torch.topk(lp, kmax, dim=-1)
        top_v, top_i = top.values.tolist(), top.indices.tolist()
    out = []
    for j, (tok, k) in enumerate(zip(tokens, ks, strict=True)):
        alts = tuple(zip(top_i[j][:k], top_v[j][:k], strict=True)) if k else ()
        out.append(TokenLogprob(tok, chosen[j], alts))
    return out
