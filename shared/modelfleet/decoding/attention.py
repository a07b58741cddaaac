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
    blocks: torch.Tensor  # [b * padded // block_size] block ids, 0 (the zero block) as padding
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
    """Where a step's keys go and how each layer gathers them; built once per step."""

    def __init__(self, pool: BlockPool, segments: list[Segment], device: Any) -> None:
        self.pool = pool
        bs = pool.block_size
        blocks: list[int] = []
        offsets: list[int] = []
        self.prefills: list[tuple[Segment, torch.Tensor]] = []
        by_len: dict[int, list[Segment]] = {}
        bucket = -(-DECODE_BUCKET // bs) * bs
        for seg in segments:
            table = seg.table.blocks
            for p in range(seg.past, seg.past + seg.length):
                blocks.append(table[p // bs])
                offsets.append(p % bs)
            total = seg.past + seg.length
            if seg.length == 1:
                by_len.setdefault(-(-total // bucket) * bucket, []).append(seg)
            else:
                ids = torch.tensor(table[: -(-total // bs)], device=device)
                self.prefills.append((seg, ids))
        self.tokens = len(blocks)
        self.write_blocks = torch.tensor(blocks, device=device)
        self.write_offsets = torch.tensor(offsets, device=device)
        self.groups: list[DecodeGroup] = []
        for padded, segs in by_len.items():
            width = padded // bs
            padded_ids = [b for s in segs for b in (s.table.blocks + [0] * width)[:width]]
            self.groups.append(
                DecodeGroup(
                    rows=torch.tensor([s.start for s in segs], device=device),
                    blocks=torch.tensor(padded_ids, device=device),
                    lengths=torch.tensor([[s.past + 1] for s in segs], device=device),
                    padded=padded,
                )
            )

    def gather(self, cache: torch.Tensor, blocks: torch.Tensor, rows: int) -> torch.Tensor:
        """``[rows, kv_heads, len(blocks) // rows * block_size, head_dim]`` from the pool."""
        picked = cache.index_select(0, blocks)  # [rows * width, heads, block_size, dim]
        _, heads, bs, dim = picked.shape
        picked = picked.view(rows, -1, heads, bs, dim).transpose(1, 2)
        return picked.reshape(rows, heads, -1, dim)


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
    n = plan.tokens
    keys[plan.write_blocks, :, plan.write_offsets] = key[0, :, :n].transpose(0, 1)
    values[plan.write_blocks, :, plan.write_offsets] = value[0, :, :n].transpose(0, 1)
    out = query.new_zeros(query.shape)
    for group in plan.groups:
        b = len(group.rows)
        q = query[0, :, group.rows].transpose(0, 1).unsqueeze(2)  # [b, heads, 1, dim]
        att = F.scaled_dot_product_attention(
            q,
            plan.gather(keys, group.blocks, b),
            plan.gather(values, group.blocks, b),
            attn_mask=group.mask(sliding),
            scale=scaling,
            enable_gqa=True,
        )
        out[0, :, group.rows] = att[:, :, 0].transpose(0, 1)
    for seg, ids in plan.prefills:
        end_q = seg.start + seg.length
        total = seg.past + seg.length
        # The oldest key any query of this segment may see (sliding-window models).
        lo = max(0, seg.past - sliding + 1) if sliding else 0
        k = plan.gather(keys, ids, 1)[:, :, lo:total]
        v = plan.gather(values, ids, 1)[:, :, lo:total]
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
        out[:, :, seg.start : end_q] = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=scaling, enable_gqa=True
        )
    return out.transpose(1, 2), None


def install(model: Any) -> None:
    """Make ``model`` use ragged attention (the mask builder steps aside for unknown names)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, ragged_attention)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
