"""Batched decode attention over the paged cache: a row's output does not depend on its batch."""

from __future__ import annotations

import torch

from modelfleet.decoding.attention import Segment, StepPlan, ragged_attention
from modelfleet.decoding.kvcache import BlockPool, BlockTable

HEADS, KV_HEADS, DIM = 6, 2, 32


class Layer(torch.nn.Module):
    layer_idx = 0


def decode_outputs(lengths: list[int]) -> list[torch.Tensor]:
    """Each sequence's attention output for one decode token after ``length - 1`` cached ones
    (keys, values and queries seeded by the sequence's length only)."""
    pool = BlockPool(1, KV_HEADS, DIM, blocks=512, block_size=16, dtype=torch.float32,
                     device="cpu")  # fmt: skip
    segments = []
    for row, n in enumerate(lengths):
        assert pool.try_reserve(pool.blocks_for(n))
        table = BlockTable(pool, pool.blocks_for(n))
        table.ensure(n)
        g = torch.Generator().manual_seed(n)
        for p in range(n - 1):
            b, o = divmod(p, 16)
            pool.keys[0, table.blocks[b], :, o] = torch.randn(KV_HEADS, DIM, generator=g)
            pool.values[0, table.blocks[b], :, o] = torch.randn(KV_HEADS, DIM, generator=g)
        segments.append(Segment(table, row, 1, n - 1))
    q = torch.stack([torch.randn(HEADS, DIM, generator=torch.Generator().manual_seed(-n))
                     for n in lengths], dim=1)[None]  # fmt: skip
    k = torch.stack([torch.ones(KV_HEADS, DIM) * n / 1000 for n in lengths], dim=1)[None]
    out, _ = ragged_attention(
        Layer(), q, k, k.clone(), None, mf_plan=StepPlan(pool, segments, "cpu")
    )
    return [out[0, i] for i in range(len(lengths))]


def test_a_decode_row_is_bitwise_the_same_alone_and_next_to_longer_sequences() -> None:
    lengths = [5, 17, 37, 100, 129, 300, 517]
    alone = {n: decode_outputs([n])[0] for n in lengths}
    batched = decode_outputs([*lengths, 1000, 1500])
    for n, out in zip(lengths, batched, strict=False):
        assert torch.equal(alone[n], out), n
