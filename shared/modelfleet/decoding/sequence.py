"""The engine's per-sequence state and the small rules about it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch

from modelfleet import tracing
from modelfleet.decoding.handles import Generation, Tokens, deliver_all
from modelfleet.decoding.kvcache import BlockTable
from modelfleet.decoding.sampling import (
    Sampler,
    SamplingParams,
    TokenLogprob,
    draw_batch,
    logprobs_batch,
    process_batch,
)


@dataclass(eq=False, slots=True)
class SequenceState:
    """One sequence inside the engine (owned by the engine thread once queued)."""

    prompt: list[int]
    params: SamplingParams
    route: str
    generation: Generation
    sampler: Sampler
    arrival: float
    deadline: float
    table: BlockTable | None = None  # its KV-cache blocks, from admission on
    pos: int = 0  # tokens whose keys/values are cached
    next_token: int = -1  # sampled, not yet fed back
    generated: int = 0
    last_token_at: float = 0.0
    cancelled: bool = False
    done: bool = False
    events: list[Tokens] = field(default_factory=list)
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


def release(seq: SequenceState) -> None:
    """Give back the sequence's KV-cache blocks and its reservation (idempotent)."""
    if seq.table is not None:
        seq.table.release()
        seq.table = None


def heir_of(seq: SequenceState) -> SequenceState | None:
    """Retire a cancelled sequence; a choice still wanted takes over its prefill."""
    seq.done = True
    live = [f for f in seq.forks if not f.cancelled]
    for f in seq.forks:
        if f.cancelled:
            f.done = True
            release(f)
    if not live:
        release(seq)
        return None
    heir = live[0]
    heir.pos, heir.forks = seq.pos, live[1:]
    if seq.table is not None and heir.table is not None:
        heir.table.take_over(seq.table)
    release(seq)
    seq.forks = []
    return heir


def take_logprobs(seq: SequenceState) -> tuple[TokenLogprob, ...]:
    """The logprobs gathered since the last hand-over, for the next one."""
    if not seq.pending_logprobs:
        return ()
    taken = tuple(seq.pending_logprobs)
    seq.pending_logprobs.clear()
    return taken


def draw_tokens(logits: torch.Tensor, seqs: list[SequenceState], eos: Collection[int]) -> list[int]:
    """Each sequence's next token from its row of ``logits``, logprobs noted where asked.

    Plain greedy rows (see :attr:`Sampler.plain`) take one batched argmax, the only work a step
    of such rows needs; the others are processed and drawn together, on the logits' device.
    """
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    special = [j for j, s in enumerate(seqs) if not s.sampler.plain]
    if not special:
        return tokens
    rows = logits if len(special) == len(seqs) else logits[special]
    samplers = [seqs[j].sampler for j in special]
    for j, token in zip(special, draw_batch(process_batch(rows, samplers), samplers), strict=True):
        tokens[j] = token
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


def flush_events(batch: list[SequenceState]) -> None:
    """Hand this step's tokens to their event loops, one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Generation, Tokens]]] = {}
    for seq in batch:
        if seq.events:
            gen = seq.generation
            by_loop.setdefault(gen._loop, []).extend((gen, ev) for ev in seq.events)
            seq.events = []
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver_all, items)
