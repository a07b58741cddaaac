"""Ragged ("packed") attention over the paged KV cache (:mod:`modelfleet.decoding.kvcache`).

One engine step feeds the model a single row of tokens: every running sequence's next token and
the next chunk of every prefilling prompt, back to back, with each token's own position id.
The projections and MLPs see one dense ``[tokens, hidden]`` matrix (that is the batching win);
attention is the only operation that must not mix sequences, so this module replaces it.
Registered as a transformers attention implementation, it receives the step's queries, keys and
values, writes every token's key and value into its sequence's blocks with one indexed store,
then attends:

- decode rows (one query each) in one ``scaled_dot_product_attention`` call per *bucket*: each
  sequence's keys are gathered through its block table into a batch padded to its own length
  rounded up to :data:`DECODE_BUCKET`, with a key mask. The padded length depends only on the
  sequence, never on its neighbours, so its attention is the same computation alone or in any
  batch (CPU kernels round differently for different key lengths, even under a mask; they do
  not for different batch sizes). Typical chat lengths share one bucket, hence one call;
- prefill chunks one call per sequence over exactly its own keys, as before.

:class:`StepPlan` holds the index tensors of a step, built once and shared by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from modelfleet.decoding.kvcache import BlockPool, BlockTable

ATTN_IMPLEMENTATION = "modelfleet_ragged"
DECODE_BUCKET = 128  # tokens; a multiple of the block size is used (see StepPlan)


@dataclass(slots=True)
class Segment:
    """``length`` tokens of one sequence at ``start`` in the packed row; positions from ``past``."""

    table: BlockTable
    start: int
    length: int
    past: int


@dataclass(slots=True)
class DecodeGroup:
    """Decode rows whose keys pad to the same length: one attention call per layer."""

    rows: torch.Tensor  # [b] their positions in the packed row
    slots: torch.Tensor  # [b * kv_heads * padded] pool rows to gather (see StepPlan.slots)
    lengths: torch.Tensor  # [b, 1] keys each row sees (its own position + 1)
    padded: int
    masks: dict[int, torch.Tensor] = field(default_factory=dict)  # by sliding window (0: none)

    def mask(self, sliding: int) -> torch.Tensor:
        if sliding not in self.masks:
            kpos = torch.arange(self.padded, device=self.lengths.device)[None, :]
            keep = kpos < self.lengths
            if sliding:
                keep &= kpos >= self.lengths - sliding
            self.masks[sliding] = keep[:, None, None, :]
        return self.masks[sliding]


class StepPlan:
    """Where a step's keys go and how each layer gathers them; built once per step.

    A layer's pool, viewed as ``[blocks * kv_heads * block_size, head_dim]``, has one row per
    (block, head, offset); every write and gather of a step is one ``index_copy_`` or
    ``index_select`` over precomputed row numbers (advanced-index assignment is several times
    slower on a CPU, and a block gather followed by a transpose copies twice).
    """

    def __init__(self, pool: BlockPool, segments: list[Segment], device: Any) -> None:
        self.pool = pool
        self.device = device
        self.heads = pool.keys.shape[2]
        bs = pool.block_size
        self._head_step = torch.arange(self.heads, device=device)[:, None] * bs  # [heads, 1]
        written: list[torch.Tensor] = []
        self.prefills: list[tuple[Segment, torch.Tensor]] = []
        by_len: dict[int, list[Segment]] = {}
        bucket = -(-DECODE_BUCKET // bs) * bs
        for seg in segments:
            total = seg.past + seg.length
            written.append(self.slots([seg.table.blocks], seg.past, total)[0])
            if seg.length == 1:
                by_len.setdefault(-(-total // bucket) * bucket, []).append(seg)
            else:
                # The oldest key a query of a sliding-window layer may see is cut per layer.
                self.prefills.append((seg, self.slots([seg.table.blocks], 0, total)[0]))
        self.tokens = sum(seg.length for seg in segments)
        # [heads, tokens] per segment -> token-major, matching key[0, :, :n].transpose(0, 1)
        self.write_slots = torch.cat([w.t() for w in written], 0).reshape(-1)
        self.groups = [
            DecodeGroup(
                rows=torch.tensor([s.start for s in segs], device=device),
                slots=self.slots([s.table.blocks for s in segs], 0, padded).reshape(-1),
                lengths=torch.tensor([[s.past + 1] for s in segs], device=device),
                padded=padded,
            )
            for padded, segs in by_len.items()
        ]

    def slots(self, tables: list[list[int]], lo: int, hi: int) -> torch.Tensor:
        """Pool rows of positions ``lo:hi`` of each table, ``[len(tables), heads, hi - lo]``;
        positions past a table's blocks read the zero block."""
        bs = self.pool.block_size
        first, last = lo // bs, -(-hi // bs)
        ids = torch.tensor(
            [(t[first:last] + [0] * (last - first))[: last - first] for t in tables],
            device=self.device,
        )  # [rows, blocks]
        pos = torch.arange(lo, hi, device=self.device)
        base = ids[:, pos // bs - first] * (self.heads * bs) + pos % bs  # [rows, hi - lo]
        return base[:, None, :] + self._head_step

    def gather(self, cache: torch.Tensor, slots: torch.Tensor, rows: int) -> torch.Tensor:
        """``[rows, kv_heads, len, head_dim]`` from one layer's pool ``cache``."""
        dim = cache.shape[-1]
        return cache.view(-1, dim).index_select(0, slots).view(rows, self.heads, -1, dim)


def ragged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The attention function transformers calls per layer (shapes ``[1, heads, T, dim]``)."""
    plan: StepPlan | None = kwargs.get("mf_plan")
    if plan is None:
        raise RuntimeError("ragged attention called outside an engine step")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("ragged attention supports neither logit soft-capping nor sinks")
    layer: int = module.layer_idx  # type: ignore[assignment]
    sliding: int = kwargs.get("sliding_window") or 0
    keys, values = plan.pool.keys[layer], plan.pool.values[layer]
    n, dim = plan.tokens, keys.shape[-1]
    keys.view(-1, dim).index_copy_(
        0, plan.write_slots, key[0, :, :n].transpose(0, 1).reshape(-1, dim)
    )
    values.view(-1, dim).index_copy_(
        0, plan.write_slots, value[0, :, :n].transpose(0, 1).reshape(-1, dim)
    )
    # Token-major, the layout the caller wants back, so each row lands with one index_copy_.
    out = query.new_zeros(query.shape[2], query.shape[1], query.shape[3])
    for group in plan.groups:
        b = len(group.rows)
        q = query[0].index_select(1, group.rows).transpose(0, 1).unsqueeze(2)  # [b, h, 1, d]
        att = F.scaled_dot_product_attention(
            q,
            plan.gather(keys, group.slots, b),
            plan.gather(values, group.slots, b),
            attn_mask=group.mask(sliding),
            scale=scaling,
            enable_gqa=True,
        )
        out.index_copy_(0, group.rows, att[:, :, 0])
    for seg, slots in plan.prefills:
        end_q = seg.start + seg.length
        total = seg.past + seg.length
        # The oldest key any query of this segment may see (sliding-window models).
        lo = max(0, seg.past - sliding + 1) if sliding else 0
        cut = slots[:, lo:].reshape(-1) if lo else slots.reshape(-1)
        k = plan.gather(keys, cut, 1)
        v = plan.gather(values, cut, 1)
        q = query[:, :, seg.start : end_q]
        mask = None
        causal = False
        if seg.past == 0 and (not sliding or seg.length <= sliding):
            causal = True
        else:
            # Query i sits at position past+i and sees keys up to itself (and, with a
            # sliding window, only the last `sliding` of them).
            qpos = torch.arange(seg.past, total, device=q.device)[:, None]
            kpos = torch.arange(lo, total, device=q.device)[None, :]
            mask = kpos <= qpos
            if sliding:
                mask &= kpos > qpos - sliding
        out[seg.start : end_q] = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=scaling, enable_gqa=True
        )[0].transpose(0, 1)
    return out[None], None


def install(model: Any) -> None:
    """Make ``model`` use ragged attention (the mask builder steps aside for unknown names)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, ragged_attention)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
