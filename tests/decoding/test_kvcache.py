"""The paged KV cache: block accounting, admission by free blocks, forks, too-large requests."""

from __future__ import annotations

import asyncio

import pytest
import torch

from modelfleet.decoding.engine import Engine
from modelfleet.decoding.kvcache import BlockPool, BlockTable
from modelfleet.decoding.loader import LoadedModel, load_causal_lm
from modelfleet.decoding.sampling import SamplingParams
from modelfleet.decoding.settings import DecoderSettings
from modelfleet.errors import InvalidRequest
from modelfleet.resolve import PACKAGED_LLM, packaged_llm_gguf, resolve
from tests.support.procs import await_until

GREEDY = SamplingParams(max_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    source = resolve("", packaged=packaged_llm_gguf, packaged_name=PACKAGED_LLM)
    return load_causal_lm(source, cache_dir=DecoderSettings().cache_dir, context_window=512)


def small_engine(lm: LoadedModel, blocks: int) -> Engine:
    eng = Engine(lm, max_batch_size=4, max_step_tokens=64, prefill_chunk=32, kv_cache_blocks=blocks)
    eng.start()
    return eng


def test_fork_shares_full_blocks_and_copies_the_partial_one() -> None:
    pool = BlockPool(2, 1, 4, blocks=8, block_size=4, dtype=torch.float32, device="cpu")
    assert pool.try_reserve(6)
    parent, child = BlockTable(pool, 3), BlockTable(pool, 3)
    parent.ensure(10)  # 2 full blocks + 2 tokens of a third
    pool.keys[:, parent.blocks] = torch.randn(2, 3, 1, 4, 4)
    child.fork_from(parent, 10)
    assert child.blocks[:2] == parent.blocks[:2] and child.blocks[2] != parent.blocks[2]
    assert torch.equal(pool.keys[:, child.blocks[2]], pool.keys[:, parent.blocks[2]])
    assert pool.used == 4
    parent.release()
    assert pool.used == 3  # the shared blocks live on with the child
    child.release()
    assert pool.used == 0 and pool.reserved == 0 and pool.free == 8


def test_blocks_are_freed_after_finish_cancel_and_forks(lm: LoadedModel) -> None:
    eng = small_engine(lm, 64)
    prompt = list(lm.tokenizer.encode("Count: " + " ".join(str(i) for i in range(30))))

    async def main() -> None:
        await eng.submit(prompt, GREEDY).collect()
        outs = await asyncio.gather(*(g.collect() for g in eng.submit_n(prompt, [GREEDY] * 3)))
        assert len({o.text for o in outs}) == 1
        gen = eng.submit(prompt, SamplingParams(max_tokens=400, temperature=0.0))
        await anext(aiter(gen))
        assert eng.pool.used > 0
        gen.cancel()
        await await_until(lambda: not eng.running, timeout=30, what="the cancelled sequence to go")

    try:
        asyncio.run(main())
        assert eng.running == 0
        assert eng.pool.used == 0 and eng.pool.reserved == 0
    finally:
        eng.stop()


def test_a_request_waits_for_blocks_rather_than_running_out(lm: LoadedModel) -> None:
    prompt = list(lm.tokenizer.encode("Tell me about the sea."))
    params = SamplingParams(max_tokens=40, temperature=0.0)
    need = -(-(len(prompt) + params.max_tokens) // 16)
    eng = small_engine(lm, need)  # room for one such sequence at a time, 4 batch slots

    async def main() -> None:
        first, second = eng.submit(prompt, params), eng.submit(prompt, params)
        it = aiter(first)
        await anext(it)
        assert eng.running == 1 and eng.waiting == 1  # a free slot, but no free blocks
        rest = [c async for c in it]
        assert rest[-1].finish_reason == "length" and first.completion_tokens == 40
        assert (await second.collect()).completion_tokens == 40

    try:
        asyncio.run(main())
        assert eng.pool.used == 0
    finally:
        eng.stop()


def test_a_request_that_can_never_fit_is_a_400(lm: LoadedModel) -> None:
    eng = small_engine(lm, 4)

    async def main() -> None:
        with pytest.raises(InvalidRequest) as exc:
            eng.submit([1, 2, 3], SamplingParams(max_tokens=100, temperature=0.0))
        assert exc.value.status_code == 400 and "KV_CACHE_BLOCKS" in exc.value.message

    try:
        asyncio.run(main())
    finally:
        eng.stop()


def test_a_cache_that_cannot_be_allocated_fails_start(lm: LoadedModel) -> None:
    """The engine thread allocates the pool; its failure reaches start()'s caller."""
    eng = Engine(lm, max_batch_size=4, kv_cache_blocks=10**12)  # petabytes
    with pytest.raises(RuntimeError):
        eng.start()
    assert eng._thread is None
