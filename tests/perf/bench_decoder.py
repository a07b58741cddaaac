"""Decoder benchmarks: the llm service against in-process batched generation, TTFT, int8, RSS.

Run: ``python -m tests.perf.bench_decoder`` (or ``make bench``). Same model, dtype (fp32 on CPU),
greedy decoding and 64 new tokens per request everywhere (``ignore_eos`` on the service,
``min_new_tokens`` in-process), so every side does the same work.

- Throughput: wrk drives ``/v1/chat/completions`` with 16 connections (16 concurrent requests,
  the 16 prompts round-robin); generated tokens/s come from the service's own
  ``modelfleet_completion_tokens_total`` over wrk's run, which counts tokens of requests still
  in flight when wrk stops (wrk's request count would drop up to a whole wave). The in-process
  baseline is ``model.generate`` on the same 16 prompts as one left-padded batch. Rounds
  alternate between the two so both see the same machine noise; medians are reported.
- TTFT: wrk can't see inside an SSE response, so a small httpx client measures the time to the
  first content chunk: one request at a time (idle), then 16 concurrent streaming clients.
- Engine choice: the same 16 x 64 in-process with this engine, transformers' static
  ``generate`` and transformers' continuous batching (``generate_batch``).
- int8: this engine with QUANTIZE=int8 against fp32: throughput, and greedy agreement (share of
  identical tokens position by position, and teacher-forced top-1 agreement).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx

from tests.perf.common import PROMPTS, PeakRss, median, merge_results, percentile, wrk_post
from tests.support.procs import Proc, service

NEW_TOKENS = 64
CONCURRENCY = 16
# Short alternating rounds: on a shared machine the noise comes in bursts of tens of seconds,
# so many short paired rounds (and the median of their ratios) beat a few long ones.
ROUNDS = 5
WRK_SECONDS = 12
INPROC_ROUNDS = 2
LLM_ENV = {"MAX_BATCH_SIZE": str(CONCURRENCY), "MAX_QUEUE": "64", "LOG_JSON": "true"}


def chat_body(prompt: str, stream: bool = False, max_tokens: int = NEW_TOKENS) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def completion_tokens(proc: Proc) -> float:
    text = httpx.get(f"{proc.url}/metrics", timeout=10).text
    total = 0.0
    for m in re.finditer(r"^modelfleet_completion_tokens_total\{[^}]*\} (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


# -- in-process -----------------------------------------------------------------------------
class InProcess:
    """The packaged model loaded in this process, fp32, for the baselines."""

    def __init__(self) -> None:
        from modelfleet.decoding.loader import load_causal_lm
        from modelfleet.decoding.settings import DecoderSettings
        from modelfleet.resolve import PACKAGED_LLM, packaged_llm_gguf, resolve

        self.source = resolve("", packaged=packaged_llm_gguf, packaged_name=PACKAGED_LLM)
        self.cache_dir = DecoderSettings().cache_dir
        self.hf = load_causal_lm(self.source, cache_dir=self.cache_dir)  # plain sdpa attention
        tok = self.hf.tokenizer
        self.prompts: list[list[int]] = [
            list(tok.apply_chat_template([{"role": "user", "content": p}],
                 add_generation_prompt=True, tokenize=True, return_dict=False))
            for p in PROMPTS
        ]  # fmt: skip

    def static_generate(self) -> tuple[float, list[list[int]]]:
        """tokens/s of one left-padded ``generate`` batch of all prompts."""
        import torch

        tok = self.hf.tokenizer
        tok.padding_side = "left"
        enc = tok.pad({"input_ids": self.prompts}, return_tensors="pt")
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.hf.model.generate(
                **enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                pad_token_id=tok.pad_token_id or 0,
            )  # fmt: skip
        elapsed = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        return sum(len(x) for x in new) / elapsed, new

    def hf_continuous_batching(self) -> float:
        """tokens/s of transformers' own continuous batching (``generate_batch``)."""
        import logging

        from transformers import GenerationConfig

        logging.getLogger("transformers").setLevel(logging.ERROR)
        cfg = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1,
                               pad_token_id=0)  # fmt: skip
        t0 = time.perf_counter()
        res = self.hf.model.generate_batch(self.prompts, generation_config=cfg)
        elapsed = time.perf_counter() - t0
        return sum(len(r.generated_tokens) for r in res.values()) / elapsed


class EngineRunner:
    """This engine in-process on its own copy of the model (fp32 or int8)."""

    def __init__(self, inproc: InProcess, quantize: str) -> None:
        from modelfleet.decoding.engine import Engine
        from modelfleet.decoding.loader import load_causal_lm
        from modelfleet.decoding.sampling import SamplingParams

        self.prompts = inproc.prompts
        self.lm = load_causal_lm(inproc.source, cache_dir=inproc.cache_dir, quantize=quantize)
        self.engine = Engine(self.lm, max_batch_size=CONCURRENCY)
        self.engine.start()
        self.params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        self.ids: list[list[int]] = []
        self.wave()  # warm-up

    def wave(self) -> float:
        """tokens/s of all prompts submitted at once; ``ids`` holds the tokens."""
        self.ids = [[] for _ in self.prompts]

        async def go() -> float:
            which = _record_tokens(self.engine, self.ids)
            t0 = time.perf_counter()
            gens = [self.engine.submit(p, self.params) for p in self.prompts]
            for i, g in enumerate(gens):
                which[id(g)] = i
            await asyncio.gather(*(g.collect() for g in gens))
            return time.perf_counter() - t0

        elapsed = asyncio.run(go())
        return sum(len(x) for x in self.ids) / elapsed

    def close(self) -> None:
        self.engine.stop()


def _record_tokens(engine: Any, ids: list[list[int]]) -> dict[int, int]:
    """Capture each sequence's sampled token ids (the engine itself only streams text)."""
    which: dict[int, int] = {}
    advance = type(engine)._advance.__get__(engine)

    def spy(seq: Any, token: int, now: float) -> None:
        i = which.get(id(seq.generation))
        if i is not None:
            ids[i].append(token)
        advance(seq, token, now)

    engine._advance = spy
    return which


def teacher_forced_agreement(lm: Any, prompts: list[list[int]], ref: list[list[int]]) -> float:
    """Share of positions where ``lm`` predicts the reference's next token (given its prefix)."""
    import torch

    lm.model.set_attn_implementation("sdpa")
    hits = total = 0
    with torch.inference_mode():
        for prompt, out in zip(prompts, ref, strict=True):
            x = torch.tensor([prompt + out[:-1]])
            logits = lm.model(input_ids=x).logits[0, len(prompt) - 1 :]
            pred = logits.argmax(-1).tolist()
            hits += sum(a == b for a, b in zip(pred, out, strict=True))
            total += len(out)
    return hits / total


def positional_agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=True))
    return same / sum(len(p) for p in a)


# -- through the service ------------------------------------------------------------------
def service_throughput(proc: Proc, seconds: int) -> dict[str, float]:
    bodies = [json.dumps(chat_body(p)) for p in PROMPTS]
    before = completion_tokens(proc)
    t0 = time.perf_counter()
    r = wrk_post(proc.url, "/v1/chat/completions", bodies, connections=CONCURRENCY,
                 duration_s=seconds)  # fmt: skip
    elapsed = time.perf_counter() - t0
    tokens = completion_tokens(proc) - before
    return {
        "tokens_per_s": tokens / elapsed,
        "completed_tokens_per_s": r["requests"] * NEW_TOKENS / (seconds or 1),
        "failed": r["non_2xx"] + r["socket_errors"],
        "p50_request_s": r["p50_ms"] / 1000,
    }


async def _ttft_one(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> float:
    """Seconds to the first chunk that carries text (the role chunk comes before any compute)."""
    t0 = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=chat_body(prompt, True, max_tokens)) as r:
        async for line in r.aiter_lines():  # read to the end, so the slot frees normally
            if (
                first is None
                and line.startswith("data: {")
                and json.loads(line[6:])["choices"][0]["delta"].get("content")
            ):
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("stream ended without content")
    return first


def ttft_idle(proc: Proc, n: int = 20) -> list[float]:
    async def go() -> list[float]:
        async with httpx.AsyncClient(timeout=60) as client:
            url = f"{proc.url}/v1/chat/completions"
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
            return [await _ttft_one(client, url, p, 4) for p in prompts]

    return asyncio.run(go())


def ttft_loaded(proc: Proc, per_client: int = 3) -> list[float]:
    """TTFT of streaming requests from 16 concurrent clients, each sending one after another."""

    async def client_loop(client: httpx.AsyncClient, k: int) -> list[float]:
        url = f"{proc.url}/v1/chat/completions"
        prompts = [PROMPTS[(k + j) % len(PROMPTS)] for j in range(per_client)]
        return [await _ttft_one(client, url, p, NEW_TOKENS) for p in prompts]

    async def go() -> list[float]:
        limits = httpx.Limits(max_connections=CONCURRENCY * 2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            res = await asyncio.gather(*(client_loop(client, k) for k in range(CONCURRENCY)))
        return [x for r in res for x in r]

    return asyncio.run(go())


def generation_rss() -> float:
    """Peak RSS of the generation service under 16 concurrent completions."""
    body = {"prompt": "Once upon a time", "max_tokens": NEW_TOKENS, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    with service("generation", {"MAX_BATCH_SIZE": str(CONCURRENCY)}, timeout=300) as proc:
        with PeakRss(proc.popen.pid) as rss:
            wrk_post(proc.url, "/v1/completions", [json.dumps(body)], connections=CONCURRENCY,
                     duration_s=10)  # fmt: skip
        return rss.peak


def run() -> dict[str, Any]:
    inproc = InProcess()
    static_rates: list[float] = []
    served: list[dict[str, float]] = []
    with service("llm", LLM_ENV, timeout=300) as proc, PeakRss(proc.popen.pid) as llm_rss:
        # Warm the service's step shapes before measuring.
        wrk_post(proc.url, "/v1/chat/completions", [json.dumps(chat_body(PROMPTS[0]))],
                 connections=CONCURRENCY, duration_s=5)  # fmt: skip
        idle = ttft_idle(proc)
        for _ in range(ROUNDS):
            static_rates.append(inproc.static_generate()[0])
            served.append(service_throughput(proc, WRK_SECONDS))
        loaded = ttft_loaded(proc)
    gen_rss = generation_rss()

    # In-process comparisons, interleaved round by round like the service rounds above.
    fp32, int8 = EngineRunner(inproc, "none"), EngineRunner(inproc, "int8")
    rates: dict[str, list[float]] = {"engine": [], "int8": [], "static": [], "hf_cb": []}
    try:
        for _ in range(INPROC_ROUNDS):
            rates["engine"].append(fp32.wave())
            rates["int8"].append(int8.wave())
            rate, static_ids = inproc.static_generate()
            rates["static"].append(rate)
            rates["hf_cb"].append(inproc.hf_continuous_batching())
    finally:
        fp32.close()
        int8.close()
    tf_agree = teacher_forced_agreement(int8.lm, inproc.prompts, fp32.ids)
    engine_fp32, engine_int8 = median(rates["engine"]), median(rates["int8"])
    hf_cb, static_once = median(rates["hf_cb"]), median(rates["static"])

    service_rate = median(s["tokens_per_s"] for s in served)
    inproc_rate = median(static_rates)
    ratios = [s["tokens_per_s"] / r for s, r in zip(served, static_rates, strict=True)]
    ratio = median(ratios)
    ttft_idle_p50 = median(idle) * 1000
    return {
        "decoder_throughput": {
            "service_tokens_per_s": round(service_rate, 1),
            "service_completed_tokens_per_s": round(
                median(s["completed_tokens_per_s"] for s in served), 1
            ),
            "inprocess_static_batch_tokens_per_s": round(inproc_rate, 1),
            "concurrency": CONCURRENCY,
            "max_tokens": NEW_TOKENS,
            "rounds": ROUNDS,
            "ratio_per_round": [round(r, 2) for r in ratios],
            "failed_requests": int(sum(s["failed"] for s in served)),
            "ratio": round(ratio, 3),
            "target": ">= 1.0 of in-process static batching",
            "met": ratio >= 1.0,
        },
        "decoder_ttft_idle": {
            "p50_ms": round(ttft_idle_p50, 1),
            "p95_ms": round(percentile(idle, 95) * 1000, 1),
            "requests": len(idle),
            "target": "p50 <= 200 ms",
            "met": ttft_idle_p50 <= 200,
        },
        "decoder_ttft_loaded": {
            "p50_ms": round(median(loaded) * 1000, 1),
            "p95_ms": round(percentile(loaded, 95) * 1000, 1),
            "concurrent_clients": CONCURRENCY,
            "requests": len(loaded),
            "target": "report",
        },
        "decoder_engine_choice": {
            "this_engine_tokens_per_s": round(engine_fp32, 1),
            "hf_static_generate_tokens_per_s": round(static_once, 1),
            "hf_continuous_batching_tokens_per_s": round(hf_cb, 1),
            "this_engine_vs_hf_cb": round(engine_fp32 / hf_cb, 2),
            "greedy_agreement_with_hf_static": round(positional_agreement(fp32.ids, static_ids), 3),
            "target": "report (chosen engine: this one)",
        },
        "decoder_int8": {
            "fp32_tokens_per_s": round(engine_fp32, 1),
            "int8_tokens_per_s": round(engine_int8, 1),
            "ratio": round(engine_int8 / engine_fp32, 2),
            "greedy_identical_token_share": round(positional_agreement(fp32.ids, int8.ids), 3),
            "teacher_forced_top1_agreement": round(tf_agree, 3),
            "target": "report",
        },
        "decoder_peak_rss": {
            "llm_mib": round(llm_rss.peak, 1),
            "generation_mib": round(gen_rss, 1),
            "target": "report",
        },
    }


def _print_medians(res: dict[str, Any]) -> None:
    for name, figures in res.items():
        shown = {k: v for k, v in figures.items() if k not in ("target", "met")}
        print(f"{name}: {shown}  (target: {figures.get('target')})")


if __name__ == "__main__":
    results = run()
    merge_results(results)
    _print_medians(results)
    print(json.dumps(results, indent=2))
