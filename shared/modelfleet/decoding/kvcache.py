"""The paged KV cache: one preallocated pool of fixed-size blocks per engine.

Keys and values of every sequence live in two tensors shaped
``[layers, blocks + 1, kv_heads, block_size, head_dim]``, allocated once when the engine starts
(``KV_CACHE_BLOCKS``), so memory does not grow or fragment with the traffic. A sequence holds a
:class:`BlockTable`: the ids of its blocks in order; token ``i`` sits in block ``blocks[i //
block_size]`` at offset ``i % block_size``. Block 0 is never handed out: it stays zero and pads
the gathered keys of short sequences in a batched attention call.

Admission reserves, per sequence, the blocks its prompt plus ``max_tokens`` can ever need, and
blocks are taken from the free list as tokens arrive; a request therefore waits for room rather
than running out of cache mid-sequence, and allocation never fails once admitted. ``n`` > 1
choices fork the prompt's table: full blocks are shared (reference counted; no sequence writes
below its own length, so a full block never changes again) and only the partly filled last
block is copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


class BlockPool:
    """The engine's cache tensors, the free list, reference counts and reservations."""

    def __init__(
        self,
        layers: int,
        kv_heads: int,
        head_dim: int,
        blocks: int,
        block_size: int,
        *,
        dtype: Any,
        device: Any,
    ) -> None:
        if blocks < 1 or block_size < 1:
            raise ValueError("the KV cache needs at least one block of at least one token")
        shape = (layers, blocks + 1, kv_heads, block_size, head_dim)
        # empty, not zeros: on a CPU untouched pages cost no memory until a block is first used;
        # each block is zeroed when handed out (allocate), so padding never meets stale NaNs.
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.keys[:, 0].zero_()
        self.values[:, 0].zero_()
        self.block_size = block_size
        self.total = blocks
        self.reserved = 0  # blocks promised to admitted sequences (worst case)
        self._free = list(range(blocks, 0, -1))  # pop() hands out low ids first
        self._refs = [0] * (blocks + 1)

    @property
    def used(self) -> int:
        return self.total - len(self._free)

    @property
    def free(self) -> int:
        return len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def try_reserve(self, blocks: int) -> bool:
        """Promise ``blocks`` to a sequence if that many are still unpromised."""
        if self.reserved + blocks > self.total:
            return False
        self.reserved += blocks
        return True

    def allocate(self) -> int:
        block = self._free.pop()
        self._refs[block] = 1
        self.keys[:, block].zero_()
        self.values[:, block].zero_()
        return block

    def share(self, block: int) -> int:
        self._refs[block] += 1
        return block

    def copy(self, block: int) -> int:
        twin = self._free.pop()
        self._refs[twin] = 1
        self.keys[:, twin] = self.keys[:, block]
        self.values[:, twin] = self.values[:, block]
        return twin

    def release(self, blocks: list[int], reserved: int) -> None:
        for block in blocks:
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)
        self.reserved -= reserved


class BlockTable:
    """One sequence's blocks and its reservation in the pool."""

    __slots__ = ("blocks", "pool", "reserved")

    def __init__(self, pool: BlockPool, reserved: int) -> None:
        self.pool = pool
        self.reserved = reserved
        self.blocks: list[int] = []

    def ensure(self, tokens: int) -> None:
        """Hold enough blocks for ``tokens`` tokens (within the reservation)."""
        while len(self.blocks) * self.pool.block_size < tokens:
            if len(self.blocks) >= self.reserved:
                raise RuntimeError("a sequence outgrew its KV-cache reservation")
            self.blocks.append(self.pool.allocate())

    def fork_from(self, parent: BlockTable, length: int) -> None:
        """Take ``parent``'s first ``length`` tokens: full blocks shared, the last one copied."""
        full, partial = divmod(length, self.pool.block_size)
        self.blocks = [self.pool.share(b) for b in parent.blocks[:full]]
        if partial:
            self.blocks.append(self.pool.copy(parent.blocks[full]))

    def take_over(self, other: BlockTable) -> None:
        """Move ``other``'s blocks here (a choice inheriting a cancelled one's prefill)."""
        self.blocks, other.blocks = other.blocks, []

    def release(self) -> None:
        self.pool.release(self.blocks, self.reserved)
        self.blocks, self.reserved = [], 0


@dataclass(frozen=True, slots=True)
class KVSpec:
    """The pool an engine will allocate: its shape, block count and dtype.

    Sized when the engine is built (so requests that can never fit are refused at once), and
    allocated by :meth:`allocate` on the engine thread (see ``Engine._run``).
    """

    layers: int
    kv_heads: int
    head_dim: int
    blocks: int
    block_size: int
    dtype: Any
    device: str

    @classmethod
    def for_model(
        cls, lm: Any, blocks: int, block_size: int, sequences: int, fraction: float
    ) -> KVSpec:
        """``blocks`` = 0 (``KV_CACHE_BLOCKS=0``) sizes the pool automatically: on CUDA,
        ``fraction`` of the memory still free after loading; on a CPU, room for ``sequences``
        full context windows, at most a quarter of physical memory (the pool's pages cost
        nothing until a block is first used)."""
        cfg = lm.model.config
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        dtype = next((p.dtype for p in lm.model.parameters() if p.is_floating_point()), None)
        dtype = dtype or torch.float32
        layers = int(text.num_hidden_layers)
        block_bytes = 2 * layers * kv_heads * block_size * head_dim * dtype.itemsize
        if not blocks and str(lm.device).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(lm.device))
            blocks = max(1, int(free * fraction) // block_bytes)
        elif not blocks:
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            wanted = sequences * -(-lm.context_window // block_size)
            blocks = max(1, min(wanted, physical // 4 // block_bytes))
        return cls(layers, kv_heads, head_dim, blocks, block_size, dtype, str(lm.device))

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def allocate(self) -> BlockPool:
        return BlockPool(
            self.layers, self.kv_heads, self.head_dim, self.blocks, self.block_size,
            dtype=self.dtype, device=self.device,
        )  # fmt: skip
