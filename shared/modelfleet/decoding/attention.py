"""Ragged ("packed") attention over per-sequence KV caches.

One engine step feeds the model a single row of tokens: every running sequence's next token and
the next chunk of every prefilling prompt, back to back, with each token's own position id.
The projections and MLPs see one dense ``[tokens, hidden]`` matrix (that is the batching win);
attention is the only operation that must not mix sequences, so this module replaces it.
Registered as a transformers attention implementation, it receives the step's queries, keys and
values, appends each sequence's keys and values to that sequence's cache and runs
``scaled_dot_product_attention`` per sequence over exactly its own cache: no padding, no mask
over other sequences, so a sequence's attention is the same computation alone or in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTN_IMPLEMENTATION = "modelfleet_ragged"


class SequenceCache:
    """Keys and values of one sequence for every layer, grown by doubling."""

    __slots__ = ("capacity", "keys", "length", "values")

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, capacity: int, *, dtype: Any, device: Any
    ) -> None:
        shape = (layers, kv_heads, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.length = 0  # tokens whose keys/values are stored (all layers)

    def reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((old.shape[0], old.shape[1], capacity, old.shape[3]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)
        self.capacity = capacity

    def clone(self) -> SequenceCache:
        """An independent copy (the prompt of a request with ``n`` > 1, forked per choice)."""
        twin = SequenceCache.__new__(SequenceCache)
        twin.keys, twin.values = self.keys.clone(), self.values.clone()
        twin.capacity, twin.length = self.capacity, self.length
        return twin


@dataclass(slots=True)
class Segment:
    """``length`` tokens of one sequence at ``start`` in the packed row; positions from ``past``."""

    cache: SequenceCache
    start: int
    length: int
    past: int


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
    segments: list[Segment] | None = kwargs.get("mf_segments")
    if segments is None:
        raise RuntimeError("ragged attention called outside an engine step")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("ragged attention supports neither logit soft-capping nor sinks")
    layer: int = module.layer_idx  # type: ignore[assignment]
    sliding: int | None = kwargs.get("sliding_window")
    out = query.new_zeros(query.shape)
    for seg in segments:
        end_q = seg.start + seg.length
        total = seg.past + seg.length
        cache = seg.cache
        cache.keys[layer, :, seg.past : total] = key[0, :, seg.start : end_q]
        cache.values[layer, :, seg.past : total] = value[0, :, seg.start : end_q]
        # The oldest key any query of this segment may see (sliding-window models).
        lo = max(0, seg.past - sliding + 1) if sliding else 0
        k = cache.keys[layer, :, lo:total].unsqueeze(0)
        v = cache.values[layer, :, lo:total].unsqueeze(0)
        q = query[:, :, seg.start : end_q]
        mask = None
        causal = False
        if seg.length > 1:
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
