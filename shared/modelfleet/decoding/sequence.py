"""The engine's per-sequence state and the small rules about it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch

from modelfleet import tracing
from modelfleet.decoding.attention import SequenceCache
from modelfleet.decoding.handles import Chunk, Generation
from modelfleet.decoding.sampling import (
    Sampler,
    SamplingParams,
    TokenLogprob,
    logprobs_batch,
    process_batch,
)
from modelfleet.decoding.text import IncrementalDetokenizer, StopMatcher


@dataclass(eq=False, slots=True)
class SequenceState:
    """One sequence inside the engine (owned by the engine thread once queued)."""

    prompt: list[int]
    params: SamplingParams
    route: str
    generation: Generation
    sampler: Sampler
    detok: IncrementalDetokenizer
    stops: StopMatcher
    arrival: float
    deadline: float
    cache: SequenceCache | None = None
    pos: int = 0  # tokens whose keys/values are cached
    next_token: int = -1  # sampled, not yet fed back
    generated: int = 0
    last_token_at: float = 0.0
    cancelled: bool = False
    done: bool = False
    events: list[Chunk] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    # n > 1: the other choices of this request, forked from this one when its prefill ends.
    forks: list[SequenceState] = field(default_factory=list)
    # Tracing (modelfleet.tracing): the request's span, taken where the sequence is created (on
    # the caller's event loop, in its request's context), and the engine's times for its spans.
    trace: Any = field(default_factory=tracing.capture)
    admitted_at: float = 0.0
    first_token_at: float = 0.0

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.prompt)


def heir_of(seq: SequenceState) -> SequenceState | None:
    """Retire a cancelled sequence; a choice still wanted takes over its prefill."""
    seq.done = True
    live = [f for f in seq.forks if not f.cancelled]
    for f in seq.forks:
        if f.cancelled:
            f.done = True
    if not live:
        seq.cache = None
        return None
    heir = live[0]
    heir.cache, heir.pos, heir.forks = seq.cache, seq.pos, live[1:]
    seq.cache, seq.forks = None, []
    return heir


def take_logprobs(seq: SequenceState) -> tuple[TokenLogprob, ...]:
    """The logprobs gathered since the last chunk, for the next one."""
    if not seq.pending_logprobs:
        return ()
    taken = tuple(seq.pending_logprobs)
    seq.pending_logprobs.clear()
    return taken


def draw_tokens(logits: torch.Tensor, seqs: list[SequenceState], eos: Collection[int]) -> list[int]:
    """Each sequence's next token from its row of ``logits``, logprobs noted where asked.

    Plain greedy rows (see :attr:`Sampler.plain`) take one batched argmax, the only work a step
    of such rows needs; the others are processed and drawn one row each.
    """
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    special = [j for j, s in enumerate(seqs) if not s.sampler.plain]
    if not special:
        return tokens
    rows = logits if len(special) == len(seqs) else logits[special]
    processed = process_batch(rows, [seqs[j].sampler for j in special])
    for i, j in enumerate(special):
        tokens[j] = seqs[j].sampler.draw(processed[i])
    want = [j for j in special if seqs[j].params.logprobs is not None]
    if want:
        ks = [seqs[j].params.logprobs or 0 for j in want]
        lps = logprobs_batch(logits, want, [tokens[j] for j in want], ks)
        for j, lp in zip(want, lps, strict=True):
            if tokens[j] not in eos:  # OpenAI never reports the end-of-sequence token
                seqs[j].pending_logprobs.append(lp)
    for j in special:
        seqs[j].sampler.accept(tokens[j])
    return tokens
