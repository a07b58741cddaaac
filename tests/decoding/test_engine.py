"""The engine in-process on the real packaged model: batch invariance, cancellation, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from modelfleet.decoding.engine import Engine
from modelfleet.decoding.loader import LoadedModel, load_causal_lm
from modelfleet.decoding.sampling import SamplingParams
from modelfleet.decoding.settings import DecoderSettings
from modelfleet.errors import ContextLengthExceeded, Overloaded
from modelfleet.resolve import PACKAGED_LLM, packaged_llm_gguf, resolve
from tests.support.procs import await_until

GREEDY = SamplingParams(max_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    source = resolve("", packaged=packaged_llm_gguf, packaged_name=PACKAGED_LLM)
    return load_causal_lm(source, cache_dir=DecoderSettings().cache_dir, context_window=512)


@pytest.fixture(scope="module")
def prompts(lm: LoadedModel) -> list[list[int]]:
    texts = ["Tell me about the sea.", "Hi", "Name three colours and explain each one."]
    out = [
        list(
            lm.tokenizer.apply_chat_template(
                [{"role": "user", "content": t}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
        for t in texts
    ]
    out.append(list(lm.tokenizer.encode("Count: " + " ".join(str(i) for i in range(60)))))
    return out


@pytest.fixture
def engine(lm: LoadedModel) -> Iterator[Engine]:
    eng = Engine(lm, max_batch_size=4, max_queue=8, max_step_tokens=64, prefill_chunk=32)
    eng.start()
    yield eng
    eng.stop()


class Recorder:
    """Keeps every logits row the engine samples from, per prompt length (plain greedy rows
    never reach a sampler's ``draw``, so this wraps the engine's sampling step instead)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}
        sample = engine._sample

        def recording(logits: torch.Tensor, entries: list[tuple[Any, int]], now: float) -> None:
            for seq, row in entries:
                self.rows.setdefault(len(seq.prompt), []).append(logits[row].cpu().clone())
            sample(logits, entries, now)

        monkeypatch.setattr(engine, "_sample", recording)


def test_logits_are_bitwise_identical_alone_and_in_any_batch(
    engine: Engine, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(engine, monkeypatch)
    target = prompts[0]
    runs: list[list[torch.Tensor]] = []

    async def alone() -> None:
        await engine.submit(target, GREEDY).collect()

    async def batched() -> None:
        await asyncio.gather(*(engine.submit(p, GREEDY).collect() for p in [prompts[3], target]))

    async def joins_late() -> None:
        # Join while two others decode (and the long prompt is mid-prefill in 32-token chunks).
        others = [engine.submit(p, GREEDY) for p in prompts[1:4:2]]
        await asyncio.sleep(0.3)
        await asyncio.gather(
            engine.submit(target, GREEDY).collect(), *(g.collect() for g in others)
        )

    for scenario in (alone, batched, joins_late):
        recorder.rows = {}
        asyncio.run(scenario())
        runs.append(recorder.rows[len(target)])
    assert len(runs[0]) == GREEDY.max_tokens
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


def test_cancel_frees_the_slot(engine: Engine, prompts: list[list[int]]) -> None:
    async def main() -> None:
        gen = engine.submit(prompts[1], SamplingParams(max_tokens=400, temperature=0.0))
        it = aiter(gen)
        await anext(it)
        assert engine.running == 1
        gen.cancel()
        end = time.monotonic() + 5
        while engine.running and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert engine.running == 0

    asyncio.run(main())


def test_full_queue_is_refused_with_retry_after(engine: Engine, prompts: list[list[int]]) -> None:
    async def main() -> None:
        long = SamplingParams(max_tokens=300, temperature=0.0)
        running = [engine.submit(prompts[1], long) for _ in range(4)]
        while engine.running < 4:
            await asyncio.sleep(0.01)
        engine.max_queue = 1
        waiting = engine.submit(prompts[1], long)
        with pytest.raises(Overloaded) as exc:
            engine.submit(prompts[1], long)
        assert exc.value.status_code == 429 and exc.value.headers()["Retry-After"]
        for g in [*running, waiting]:
            g.cancel()

    asyncio.run(main())


def test_context_window_names_both_counts(engine: Engine) -> None:
    with pytest.raises(ContextLengthExceeded) as exc:
        engine.check_lengths(500, 20)
    assert "512" in exc.value.message and "500" in exc.value.message and "20" in exc.value.message


def test_stop_string_and_finish_reasons(engine: Engine, lm: LoadedModel) -> None:
    prompt = list(lm.tokenizer.encode("1, 2, 3, 4, 5,"))

    async def main() -> list[Any]:
        free = engine.submit(prompt, SamplingParams(max_tokens=8, temperature=0.0)).collect()
        stop = engine.submit(
            prompt, SamplingParams(max_tokens=8, temperature=0.0, stop=(" 8",))
        ).collect()
        return list(await asyncio.gather(free, stop))

    free, stopped = asyncio.run(main())
    assert free.finish_reason == "length" and free.completion_tokens == 8
    assert " 8" in free.text
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(" 8")]


def test_text_is_made_on_the_callers_loop_and_a_stop_there_frees_the_slot(
    engine: Engine, lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detokenisation and stop strings run off the engine's step loop; a stop string found
    on the caller's side still ends the sequence in the engine (slot and blocks freed)."""
    threads: set[str] = set()
    decode = lm.tokenizer.decode

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(lm.tokenizer, "decode", recording)
    prompt = list(lm.tokenizer.encode("1, 2, 3, 4, 5,"))

    async def main() -> Any:
        gen = engine.submit(prompt, SamplingParams(max_tokens=200, temperature=0.0, stop=(" 8",)))
        out = await gen.collect()
        await await_until(lambda: engine.running == 0, timeout=30)
        return out

    out = asyncio.run(main())
    assert out.finish_reason == "stop" and out.completion_tokens < 10
    assert threads == {threading.current_thread().name}, threads
    assert engine.pool.used == 0 and engine.pool.reserved == 0


def test_n_choices_share_one_prefill_and_outlive_a_cancelled_first(
    engine: Engine, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[int] = []
    forward = engine._forward

    def counting(ids: list[int], *args: Any) -> torch.Tensor:
        fed.append(len(ids))
        return forward(ids, *args)

    monkeypatch.setattr(engine, "_forward", counting)
    long = prompts[3]

    async def main() -> None:
        alone = await engine.submit(long, GREEDY).collect()
        fed.clear()
        outs = await asyncio.gather(*(g.collect() for g in engine.submit_n(long, [GREEDY] * 3)))
        assert [o.text for o in outs] == [alone.text] * 3
        assert sum(fed) < 2 * len(long)  # the prompt went through the model once
        # The first choice leaves mid-prefill: another takes over its cache and finishes.
        first, second = engine.submit_n(long, [GREEDY] * 2)
        first.cancel()
        assert (await second.collect()).text == alone.text

    asyncio.run(main())
