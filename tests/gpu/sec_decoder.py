"""Decoder sections: the continuous-batching engine in-process, on SmolLM2-135M's exact shape.

A 135M checkpoint does not fit the device call's 64 MiB carry limit, so the model is built
there from the carried config and tokenizer with seeded random weights (bf16): speed and batch
invariance do not depend on the weights' values, and ``ignore_eos`` keeps every sequence at
its full length.

Target (issue 16): 16 concurrent requests x 64 new tokens, greedy: the engine's tokens/s
>= 2.0x transformers' static ``generate`` of the same prompts on the same checkpoint.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from tests.gpu.gpuinfo import GpuSampler
from tests.gpu.harness import LLM_SHAPE, Ctx, log
from tests.perf.common import PROMPTS
from tests.support.procs import await_until

CACHE = Path("/tmp/mf-cache")


def build_random_llm(target: Path, layers: int = 0) -> Path:
    """SmolLM2-135M's config and tokenizer with seeded random bf16 weights, in ``target``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (target / "model.safetensors").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    cfg = AutoConfig.from_pretrained(LLM_SHAPE)
    if layers:
        cfg.num_hidden_layers = layers
    torch.manual_seed(0)
    auto: Any = AutoModelForCausalLM  # untyped in transformers
    model = auto.from_config(cfg, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(target)
    for p in LLM_SHAPE.iterdir():
        if p.name != "config.json" and p.is_file():
            shutil.copy2(p, target / p.name)
    return target


def _load(ctx: Ctx) -> Any:
    from modelfleet.decoding.loader import load_causal_lm
    from modelfleet.resolve import ModelSource

    llm_dir = Path(ctx.shared["llm_dir"])
    source = ModelSource(str(llm_dir), llm_dir.name, local=True)
    return load_causal_lm(source, cache_dir=CACHE, device=ctx.device, context_window=2048)


def _chat_ids(tok: Any, text: str) -> list[int]:
    return list(tok.apply_chat_template([{"role": "user", "content": text}],
                add_generation_prompt=True, tokenize=True, return_dict=False))  # fmt: skip


def section_invariance(res: dict[str, Any], ctx: Ctx) -> None:
    """Bitwise-equal logits for one prompt alone, again, with 1 and 15 others, joining late."""
    import torch

    from modelfleet.decoding.engine import Engine
    from modelfleet.decoding.sampling import SamplingParams

    lm = _load(ctx)
    res.update(dtype=str(lm.dtype), device=lm.device,
               layers=int(lm.model.config.num_hidden_layers),
               params_m=round(sum(p.numel() for p in lm.model.parameters()) / 1e6, 1))  # fmt: skip
    tok = lm.tokenizer
    prompts = [_chat_ids(tok, t) for t in PROMPTS]
    greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    rows: dict[int, list[torch.Tensor]] = {}
    toks: dict[int, list[int]] = {}

    keys: dict[int, int] = {}  # id(sequence) -> scenario key

    def recording(sample: Any) -> Any:
        """Wrap the engine's sampling step (plain greedy rows never reach ``Sampler.draw``)."""

        def wrapped(logits: torch.Tensor, entries: list[tuple[Any, int]], now: float) -> None:
            sample(logits, entries, now)
            for seq, row in entries:
                key = keys.get(id(seq), -1)
                rows.setdefault(key, []).append(logits[row].float().cpu().clone())
                toks.setdefault(key, []).append(int(seq.next_token))

        return wrapped

    eng = Engine(lm, max_batch_size=16, max_queue=64, max_step_tokens=512, prefill_chunk=32)
    eng._sample = recording(eng._sample)  # type: ignore[method-assign]
    eng.start()
    try:
        target = _chat_ids(tok, "Tell me about the sea.")
        long = list(tok.encode("Count: " + " ".join(str(i) for i in range(60))))

        def sub(p: list[int], key: int) -> Any:
            g = eng.submit(p, greedy)
            keys[id(g._seq)] = key
            return g

        async def alone() -> None:
            await sub(target, 0).collect()

        async def with_one() -> None:
            await asyncio.gather(sub(long, 1).collect(), sub(target, 0).collect())

        async def with_fifteen() -> None:
            others = [sub(p, 100 + i) for i, p in enumerate(prompts[:15])]
            await asyncio.gather(sub(target, 0).collect(), *(g.collect() for g in others))

        async def joins_late() -> None:
            others = [sub(p, 200 + i) for i, p in enumerate([long, *prompts[:6]])]
            # The target joins once the others are all in the batch.
            await await_until(lambda: eng.running >= len(others), 30, what="the others to run")
            await asyncio.gather(sub(target, 0).collect(), *(g.collect() for g in others))

        base_rows: list[torch.Tensor] = []
        base_toks: list[int] = []
        scen: dict[str, Any] = {}
        for name, fn in (("alone", alone), ("alone_again", alone), ("with_1_other", with_one),
                         ("with_15_others", with_fifteen), ("joins_late", joins_late)):  # fmt: skip
            rows.clear()
            toks.clear()
            asyncio.run(fn())
            if name == "alone":
                base_rows, base_toks = rows[0], toks[0]
                continue
            pairs = list(zip(base_rows, rows[0], strict=True))
            scen[name] = {
                "bitwise_equal_logits": all(torch.equal(a, b) for a, b in pairs),
                "max_abs_logit_diff": max(float((a - b).abs().max()) for a, b in pairs),
                "same_greedy_tokens": toks[0] == base_toks,
            }
    finally:
        eng.stop()
    res["scenarios"] = scen
    res["pass"] = all(v["bitwise_equal_logits"] for v in scen.values())


def section_throughput(res: dict[str, Any], ctx: Ctx) -> None:
    """The engine against static ``generate``, 16 prompts x 64 new tokens, greedy."""
    import torch

    from modelfleet.decoding.engine import Engine
    from modelfleet.decoding.sampling import SamplingParams

    dev = ctx.device
    lm = _load(ctx)
    tok = lm.tokenizer
    prompts = [_chat_ids(tok, t) for t in PROMPTS]
    new = 16 if ctx.quick else 64
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    eng = Engine(lm, max_batch_size=16, max_queue=64)
    eng.start()
    engine_ids: list[list[int]] = [[] for _ in prompts]
    which: dict[int, int] = {}  # id(Generation) -> prompt index, for the recorded wave only
    advance = eng._advance

    def spy(seq: Any, token: int, now: float) -> None:
        if (i := which.get(id(seq.generation))) is not None:
            engine_ids[i].append(token)
        advance(seq, token, now)

    eng._advance = spy  # type: ignore[method-assign]

    def wave(record: bool = False) -> float:
        async def go() -> float:
            t = time.perf_counter()
            gens = [eng.submit(p, params) for p in prompts]
            which.clear()
            if record:
                which.update((id(g), i) for i, g in enumerate(gens))
            await asyncio.gather(*(g.collect() for g in gens))
            return time.perf_counter() - t

        return len(prompts) * new / asyncio.run(go())

    try:
        wave()  # warm-up: first-use kernels and the cache's first allocations
        with GpuSampler() as gpu:
            engine_rates = [round(wave(i == 0), 1) for i in range(ctx.args.reps)]
    finally:
        eng.stop()
    res["engine_gpu"] = gpu.summary()
    ctx.report.save()

    # Static generate on a plain (sdpa) copy of the same checkpoint.
    hf = _load(ctx)
    res["hf_attn_implementation"] = str(getattr(hf.model.config, "_attn_implementation", "?"))
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt").to(dev)

    def static() -> tuple[float, list[list[int]]]:
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                    pad_token_id=tok.pad_token_id or 0)  # fmt: skip
        if dev == "cuda":
            torch.cuda.synchronize()
        ids = out[:, enc["input_ids"].shape[1] :].tolist()
        return sum(len(x) for x in ids) / (time.perf_counter() - t), ids

    static()  # warm-up
    gen_rates: list[float] = []
    gen_ids: list[list[int]] = []
    for _ in range(ctx.args.reps):
        rate, gen_ids = static()
        gen_rates.append(round(rate, 1))
    first_div = [next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), None)
                 for x, y in zip(engine_ids, gen_ids, strict=False)]  # fmt: skip
    em, gm = statistics.median(engine_rates), statistics.median(gen_rates)
    res.update(prompts=len(prompts), new_tokens=new, engine_tokens_per_s=engine_rates,
               hf_static_generate_tokens_per_s=gen_rates, engine_median=em, generate_median=gm,
               ratio_engine_over_generate=round(em / gm, 3),
               engine_vs_generate_first_divergence=first_div)  # fmt: skip
    if dev == "cuda":
        res["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    log(f"engine {em} vs generate {gm} tok/s")
