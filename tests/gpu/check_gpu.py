"""One-shot check of the fleet's CUDA path, for a GPU machine reached for a few minutes.

Needs the assets that ``python -m tests.gpu.prepare_assets`` writes into ``.gpu/`` on a CPU
machine (fp16 MiniLM, CPU reference embeddings, SmolLM2-135M's config and tokenizer). Sections,
each timed and guarded (a failure is recorded with its traceback and the next section runs), and
the results file rewritten after each one, so a run cut short still reports what it reached:

1. ``env``: nvidia-smi, torch / CUDA / transformers versions, the device.
2. ``embedding``: the real embedding service on the device: ``/v1/embeddings`` against the CPU
   fp32 reference (cosine), ``/metrics``, throughput under 64 concurrent clients against
   in-process ``SentenceTransformer.encode`` on the same device at batch 32/64/128.
3. ``decoder``: the continuous-batching engine in-process on a random-weight checkpoint with
   SmolLM2-135M's exact shape and tokenizer: batch invariance (bitwise logits alone / batched /
   joining late, as tests/decoding/test_engine.py does), engine vs transformers' static
   ``generate`` tokens/s (16 prompts x 64 new tokens, greedy).
4. ``llm_service``: the llm service on that checkpoint: a chat completion, a streamed one.
5. ``classification``: the classification service (embedding backend, fp16 MiniLM).

Run: ``python -m tests.gpu.check_gpu --device cuda --out DIR`` (``--device cpu --quick`` for a
dry run on a CPU machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The benchmark texts of `make bench`, so figures compare.
from tests.perf.common import PROMPTS, SENTENCES

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / ".gpu"
MINILM = ASSETS / "minilm-fp16"
LLM_SHAPE = ASSETS / "smollm2-shape"
REF = ASSETS / "embedding-ref.json"


# -- bookkeeping --------------------------------------------------------------------------------
class Report:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.data: dict[str, Any] = {
            "meta": {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "timings_s": {},
            "errors": {},
        }
        self.budget = args.budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def save(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.out / "gpu-results.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.out / "gpu-results.json")

    def section(self, name: str, fn: Callable[[dict[str, Any]], None], need_s: float = 0) -> None:
        if need_s and self.left() < need_s:
            self.data[name] = {"skipped": f"{self.left():.0f} s left, section needs ~{need_s:.0f}"}
            log(f"== {name}: skipped (time)")
            self.save()
            return
        log(f"== {name} (t={self.elapsed():.0f}s)")
        res: dict[str, Any] = {}
        self.data[name] = res
        t = time.monotonic()
        try:
            fn(res)
        except BaseException as exc:  # record and go on
            self.data["errors"][name] = traceback.format_exc()
            log(f"!! {name} failed: {exc!r}")
            log(traceback.format_exc())
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            self.data["timings_s"][name] = round(time.monotonic() - t, 1)
            self.save()
        log(f"== {name} done in {self.data['timings_s'][name]} s: {short(res)}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def short(res: dict[str, Any], limit: int = 1500) -> str:
    s = json.dumps(res, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def cosine_rows(a: Any, b: Any) -> list[float]:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return [round(float(x), 6) for x in num / den]


# -- services -----------------------------------------------------------------------------------
class Services:
    """Services started early (they load while other sections run), stopped at the end."""

    def __init__(self) -> None:
        self.procs: dict[str, Any] = {}

    def start(self, name: str, env: dict[str, str]) -> None:
        from tests.support.procs import start_service

        self.procs[name] = start_service(name, env, wait_ready=False)
        log(f"started {name} (pid {self.procs[name].popen.pid}, port {self.procs[name].port})")

    def ready(self, name: str, timeout: float) -> Any:
        from tests.support.procs import wait_until_ready

        proc = self.procs[name]
        t = time.monotonic()
        wait_until_ready(proc, min(timeout, max(20.0, REPORT.left())))
        log(f"{name} ready after a further {time.monotonic() - t:.1f} s")
        return proc

    def stop_all(self) -> dict[str, str]:
        tails = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
            tails[name] = proc.log(3000)
        return tails


def metrics_summary(text: str) -> dict[str, Any]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    fleet = sorted(n for n in names if n.startswith("modelfleet_"))
    return {
        "modelfleet_series_names": len(fleet),
        "gpu_series": sorted(n for n in fleet if n.startswith("modelfleet_gpu_")),
        "sample": fleet[:40],
        "gpu_lines": [ln for ln in text.splitlines() if ln.startswith("modelfleet_gpu_")][:6],
    }


# -- load generator (separate processes, so the client is not the bottleneck) ------------------
def _load_worker(url: str, bodies: list[bytes], conns: int, duration: float, q: Any) -> None:
    import httpx

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> dict[str, Any]:
        ok = bad = errors = 0
        lat: list[float] = []
        end = time.perf_counter() + duration
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

            async def one(k: int) -> None:
                nonlocal ok, bad, errors
                i = k
                while time.perf_counter() < end:
                    t = time.perf_counter()
                    try:
                        r = await client.post(url, content=bodies[i % len(bodies)], headers=headers)
                        if r.status_code == 200:
                            ok += 1
                            lat.append(time.perf_counter() - t)
                        else:
                            bad += 1
                    except Exception:
                        errors += 1
                    i += conns

            await asyncio.gather(*(one(k) for k in range(conns)))
        return {"ok": ok, "non_200": bad, "errors": errors, "lat": lat[:: max(1, len(lat) // 5000)]}

    q.put(asyncio.run(main()))


def load_test(url: str, bodies: list[bytes], clients: int, procs: int, duration: float,
              watch_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_load_worker, args=(url, bodies, n, duration, q)) for n in per]
    with Watch(watch_pid) as watch:
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        results = [q.get(timeout=duration + 60) for _ in workers]
        elapsed = time.perf_counter() - t0
    for w in workers:
        w.join(10)
    ok = sum(r["ok"] for r in results)
    lat = sorted(x for r in results for x in r["lat"])

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {
        "clients": clients,
        "client_processes": procs,
        "duration_s": duration,
        "ok": ok,
        "non_200": sum(r["non_200"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "requests_per_s": round(ok / duration, 1),
        "wall_incl_spawn_s": round(elapsed, 1),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        **watch.summary(),
    }


class Watch:
    """Samples a process' CPU and the GPU's utilisation in the background."""

    def __init__(self, pid: int | None) -> None:
        import threading

        self.pid = pid
        self.cpu: list[float] = []
        self.gpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        nv = handle = None
        with contextlib.suppress(Exception):
            import pynvml

            pynvml.nvmlInit()
            nv, handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        proc = psutil.Process(self.pid) if self.pid else None
        if proc is not None:
            proc.cpu_percent(None)
        while not self._stop.wait(0.5):
            if proc is not None:
                with contextlib.suppress(Exception):
                    self.cpu.append(proc.cpu_percent(None))
            if nv is not None:
                with contextlib.suppress(Exception):
                    self.gpu.append(float(nv.nvmlDeviceGetUtilizationRates(handle).gpu))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # Drop the first and last samples (spawn and wind-down).
        cpu = self.cpu[2:-1] or self.cpu
        gpu = self.gpu[2:-1] or self.gpu
        if cpu:
            out["service_cpu_percent_median"] = round(statistics.median(cpu), 1)
        if gpu:
            out["gpu_util_percent_median"] = round(statistics.median(gpu), 1)
        return out


# -- sections -----------------------------------------------------------------------------------
def section_env(res: dict[str, Any], args: argparse.Namespace) -> None:
    import torch

    res["python"] = sys.version.split()[0]
    res["platform"] = platform.platform()
    res["cpus"] = os.cpu_count()
    res["torch"] = torch.__version__
    res["torch_cuda"] = torch.version.cuda
    res["cuda_available"] = torch.cuda.is_available()
    for mod in ("transformers", "sentence_transformers", "huggingface_hub", "tokenizers",
                "fastapi", "starlette", "pydantic", "uvicorn", "numpy", "httpx"):  # fmt: skip
        with contextlib.suppress(Exception):
            res[mod] = __import__(mod).__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res["device_name"] = p.name
        res["capability"] = f"{p.major}.{p.minor}"
        res["memory_gib"] = round(p.total_memory / 2**30, 1)
        res["bf16_supported"] = torch.cuda.is_bf16_supported()
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        res["nvidia_smi"] = r.stdout[-3000:] or r.stderr[-1000:]
        print(r.stdout, flush=True)
    elif args.device == "cuda":
        res["nvidia_smi"] = "not on PATH"


def section_embedding(res: dict[str, Any], args: argparse.Namespace, svc: Services) -> None:
    import httpx
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from modelfleet.devices import torch_dtype

    ref = json.loads(REF.read_text())
    ref_emb = np.asarray(ref["embeddings_fp32_cpu"], dtype=np.float32)
    res["fp16_weights_cpu_cosine_min"] = ref["fp16_weights_cpu_fp32_cosine_min"]

    proc = svc.ready("embedding", 240)
    url = proc.url
    res["ready"] = True
    models = httpx.get(f"{url}/v1/models", timeout=10).json()
    res["v1_models"] = models
    # Correctness: the service against the CPU fp32 reference.
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ref["sentences"], "model": "m"},
                   timeout=60)  # fmt: skip
    res["embeddings_status"] = r.status_code
    body = r.json()
    served = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    cos = cosine_rows(served, ref_emb)
    res["service_vs_cpu_fp32_cosine"] = cos
    res["service_vs_cpu_fp32_cosine_min"] = min(cos)
    res["cosine_ok_ge_0_99"] = min(cos) >= 0.99
    res["truncated_flags"] = [bool(d.get("truncated")) for d in body["data"]]
    res["usage"] = body.get("usage")
    rb = httpx.post(f"{url}/v1/embeddings", json={"input": ref["sentences"][:2],
                    "encoding_format": "base64", "dimensions": 128}, timeout=30)  # fmt: skip
    res["base64_dim128_status"] = rb.status_code
    sim = httpx.post(
        f"{url}/v1/similarity",
        json={
            "query": "reset my password",
            "documents": ["stock prices fell", "how to recover a forgotten password"],
        },
        timeout=30,
    )
    res["similarity"] = sim.json() if sim.status_code == 200 else sim.text[:500]

    # Which dtype did the service run in? Compare with in-process encodes on the same device.
    dev = args.device
    svc_dtype = torch_dtype("auto", dev)
    res["service_expected_dtype"] = str(svc_dtype)
    per_dtype = {}
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        if dev == "cpu" and dt is torch.float16:
            continue
        m = SentenceTransformer(str(MINILM), device=dev, model_kwargs={"dtype": dt})
        e = m.encode(ref["sentences"], normalize_embeddings=True, convert_to_numpy=True)
        per_dtype[str(dt)] = {
            "vs_cpu_fp32_min": min(cosine_rows(e, ref_emb)),
            "vs_service_max_abs_diff": float(np.abs(np.asarray(e, np.float32) - served).max()),
            "model_param_dtype": str(next(m.parameters()).dtype),
        }
        del m
    res["inprocess_by_dtype"] = per_dtype
    log(f"embedding cosine vs CPU: min {min(cos):.5f}; by dtype {per_dtype}")

    res["metrics_after_requests"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ""}, timeout=10)
    res["empty_input_status"] = r.status_code
    res["save_point"] = "correctness done"
    REPORT.save()

    # Throughput: service under concurrent clients, one sentence per request (as bench_embedding).
    bodies = [json.dumps({"input": s, "model": "all-MiniLM-L6-v2"}).encode() for s in SENTENCES]
    clients = 64
    cprocs = args.client_procs
    dur = 3.0 if args.quick else args.load_seconds
    load_test(f"{url}/v1/embeddings", bodies, clients, cprocs, 2.0)  # warm the batcher path
    res["service_64_clients_1_input"] = load_test(
        f"{url}/v1/embeddings", bodies, clients, cprocs, dur, proc.popen.pid
    )
    log(f"service load: {res['service_64_clients_1_input']}")
    REPORT.save()
    # Same load with 16 inputs per request: how much of the gap is per-request overhead.
    bodies16 = [json.dumps({"input": SENTENCES, "model": "m"}).encode()]
    r16 = load_test(f"{url}/v1/embeddings", bodies16, clients, cprocs, dur / 2, proc.popen.pid)
    r16["sentences_per_s"] = round(r16["requests_per_s"] * len(SENTENCES), 1)
    res["service_64_clients_16_inputs"] = r16
    log(f"service load (16 inputs/request): {r16}")
    # Idle latency: one client.
    res["service_1_client"] = load_test(f"{url}/v1/embeddings", bodies, 1, 1, 3.0)
    REPORT.save()

    # In-process baseline on the same device and dtype as the service.
    model = SentenceTransformer(str(MINILM), device=dev, model_kwargs={"dtype": svc_dtype})
    n = 512 if args.quick else args.inproc_texts
    texts = (SENTENCES * (n // len(SENTENCES) + 1))[:n]
    model.encode(texts[:256], batch_size=64, show_progress_bar=False)  # warm-up
    rates = {}
    with Watch(None) as w:
        for bs in (32, 64, 128):
            best = 0.0
            for _ in range(2):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model.encode(texts, batch_size=bs, normalize_embeddings=True,
                             show_progress_bar=False)  # fmt: skip
                best = max(best, n / (time.perf_counter() - t))
            rates[bs] = round(best, 1)
    res["inprocess_sentences_per_s_by_batch"] = rates
    res["inprocess_watch"] = w.summary()
    best_bs = max(rates, key=lambda k: rates[k])
    svc_rate = res["service_64_clients_1_input"]["requests_per_s"]
    res["summary"] = {
        "service_sentences_per_s_64_clients": svc_rate,
        "inprocess_best_sentences_per_s": rates[best_bs],
        "inprocess_best_batch": best_bs,
        "ratio_service_over_inprocess": round(svc_rate / rates[best_bs], 3),
        "ratio_16_inputs_per_request": round(r16["sentences_per_s"] / rates[best_bs], 3),
        "service_max_batch_size": args.embed_batch,
        "dtype": str(svc_dtype),
    }
    del model
    res["metrics_after_load"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)


def build_random_llm(args: argparse.Namespace) -> Path:
    """SmolLM2-135M's config and tokenizer with seeded random weights (bf16), in /tmp."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target = Path(args.llm_dir)
    if (target / "model.safetensors").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    cfg = AutoConfig.from_pretrained(LLM_SHAPE)
    if args.layers:
        cfg.num_hidden_layers = args.layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(target)
    for p in LLM_SHAPE.iterdir():
        if p.name not in ("config.json",) and p.is_file():
            shutil.copy2(p, target / p.name)
    return target


def section_decoder(res: dict[str, Any], args: argparse.Namespace, llm_dir: Path) -> None:
    import torch

    import modelfleet.decoding.engine as engine_mod
    from modelfleet.decoding.engine import Engine
    from modelfleet.decoding.loader import load_causal_lm
    from modelfleet.decoding.sampling import Sampler, SamplingParams
    from modelfleet.resolve import ModelSource

    dev = args.device
    source = ModelSource(str(llm_dir), llm_dir.name, local=True)
    lm = load_causal_lm(source, cache_dir=Path("/tmp/mf-cache"), device=dev, context_window=2048)
    res["dtype"] = str(lm.dtype)
    res["device"] = lm.device
    res["layers"] = int(lm.model.config.num_hidden_layers)
    res["params_m"] = round(sum(p.numel() for p in lm.model.parameters()) / 1e6, 1)
    tok = lm.tokenizer

    def chat(t: str) -> list[int]:
        return list(tok.apply_chat_template([{"role": "user", "content": t}],
                    add_generation_prompt=True, tokenize=True, return_dict=False))  # fmt: skip

    prompts = [chat(t) for t in PROMPTS]

    # -- batch invariance (the approach of tests/decoding/test_engine.py) --
    greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    rows: dict[int, list[torch.Tensor]] = {}
    toks: dict[int, list[int]] = {}

    class Recorder(Sampler):
        def __init__(self, params: SamplingParams, device: str = "cpu") -> None:
            super().__init__(params, device)
            self.key = -1

        def draw(self, logits: torch.Tensor) -> int:
            t = super().draw(logits)
            rows.setdefault(self.key, []).append(logits.clone())
            toks.setdefault(self.key, []).append(t)
            return t

    engine_mod.Sampler = Recorder  # type: ignore[misc]
    try:
        eng = Engine(lm, max_batch_size=16, max_queue=64, max_step_tokens=512, prefill_chunk=32)
        eng.start()
        target = chat("Tell me about the sea.")
        long = list(tok.encode("Count: " + " ".join(str(i) for i in range(60))))

        def sub(p: list[int], key: int) -> Any:
            g = eng.submit(p, greedy)
            g._seq.sampler.key = key
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
            await asyncio.sleep(0.05 if dev == "cuda" else 0.3)
            await asyncio.gather(sub(target, 0).collect(), *(g.collect() for g in others))

        base_rows: list[torch.Tensor] = []
        base_toks: list[int] = []
        scen: dict[str, Any] = {}
        for name, fn in (("alone", alone), ("alone_again", alone), ("with_1_other", with_one),
                         ("with_15_others", with_fifteen), ("joins_late", joins_late)):  # fmt: skip
            rows.clear()
            toks.clear()
            asyncio.run(fn())
            got_rows, got_toks = rows[0], toks[0]
            if name == "alone":
                base_rows, base_toks = got_rows, got_toks
                scen[name] = {"tokens": got_toks}
                continue
            diffs = [float((a - b).abs().max()) for a, b in zip(base_rows, got_rows, strict=True)]
            scen[name] = {
                "bitwise_equal_logits": all(
                    torch.equal(a, b) for a, b in zip(base_rows, got_rows, strict=True)
                ),
                "max_abs_logit_diff": max(diffs),
                "same_greedy_tokens": got_toks == base_toks,
            }
        eng.stop()
    finally:
        engine_mod.Sampler = Sampler  # type: ignore[misc]
    res["batch_invariance"] = scen
    res["batch_invariance_pass"] = all(v.get("bitwise_equal_logits", True) for v in scen.values())
    res["greedy_tokens_invariant"] = all(v.get("same_greedy_tokens", True) for v in scen.values())
    log(f"batch invariance: {scen}")
    REPORT.save()

    # -- throughput: engine vs static generate, 16 prompts x 64 new tokens, greedy --
    new = 16 if args.quick else 64
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    eng = Engine(lm, max_batch_size=16, max_queue=64)
    eng.start()
    engine_ids: list[list[int]] = [[] for _ in prompts]
    which: dict[int, int] = {}  # id(Generation) -> prompt index
    orig_advance = Engine._advance

    def wave() -> float:
        async def go() -> float:
            t = time.perf_counter()
            gens = [eng.submit(p, params) for p in prompts]
            which.clear()
            which.update((id(g), i) for i, g in enumerate(gens))
            await asyncio.gather(*(g.collect() for g in gens))
            return time.perf_counter() - t

        return len(prompts) * new / asyncio.run(go())

    wave()  # warm-up
    engine_rates = [round(wave(), 1) for _ in range(args.reps)]

    # Record the engine's tokens once (a spy on _advance).
    def spy(self: Any, seq: Any, token: int, now: float) -> None:
        idx = which.get(id(seq.generation), -1)
        if idx >= 0:
            engine_ids[idx].append(token)
        orig_advance(self, seq, token, now)

    Engine._advance = spy  # type: ignore[method-assign]
    try:
        wave()
    finally:
        Engine._advance = orig_advance  # type: ignore[method-assign]
    eng.stop()
    # Static generate on a plain (sdpa) copy of the same checkpoint.
    hf = load_causal_lm(source, cache_dir=Path("/tmp/mf-cache"), device=dev, context_window=2048)
    res["hf_attn_implementation"] = str(getattr(hf.model.config, "_attn_implementation", "?"))
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt").to(dev)

    def static() -> tuple[float, list[list[int]]]:
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.model.generate(
                **enc,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=tok.pad_token_id or 0,
            )
        if dev == "cuda":
            torch.cuda.synchronize()
        el = time.perf_counter() - t
        ids = out[:, enc["input_ids"].shape[1] :].tolist()
        return sum(len(x) for x in ids) / el, ids

    static()  # warm-up
    gen_rates = []
    gen_ids: list[list[int]] = []
    for _ in range(args.reps):
        rate, gen_ids = static()
        gen_rates.append(round(rate, 1))
    same_pos = sum(a == b for x, y in zip(engine_ids, gen_ids, strict=False)
                   for a, b in zip(x, y, strict=False))  # fmt: skip
    total = sum(len(x) for x in gen_ids)
    first_div = []
    for x, y in zip(engine_ids, gen_ids, strict=False):
        d = next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), None)
        first_div.append(d)
    res["throughput"] = {
        "prompts": len(prompts),
        "new_tokens": new,
        "engine_tokens_per_s": engine_rates,
        "hf_static_generate_tokens_per_s": gen_rates,
        "engine_median": statistics.median(engine_rates),
        "generate_median": statistics.median(gen_rates),
        "ratio_engine_over_generate": round(
            statistics.median(engine_rates) / statistics.median(gen_rates), 3
        ),
        "engine_vs_generate_same_token_share": round(same_pos / max(1, total), 3),
        "engine_vs_generate_first_divergence": first_div,
        "engine_tokens_recorded": sum(len(x) for x in engine_ids),
    }
    log(f"decoder throughput: {res['throughput']}")
    if dev == "cuda":
        res["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)


def section_llm_service(res: dict[str, Any], args: argparse.Namespace, svc: Services) -> None:
    import httpx

    proc = svc.ready("llm", 240)
    url = proc.url
    res["ready"] = True
    body = {"model": "m", "messages": [{"role": "user", "content": "Hello! Who are you?"}],
            "max_tokens": 16, "temperature": 0}  # fmt: skip
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    res["chat_status"] = r.status_code
    res["chat_body"] = r.json() if r.status_code == 200 else r.text[:1000]
    lines: list[str] = []
    t = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60, json={
            **body, "stream": True, "stream_options": {"include_usage": True}}) as s:  # fmt: skip
        res["stream_status"] = s.status_code
        res["stream_content_type"] = s.headers.get("content-type")
        for line in s.iter_lines():
            if line:
                if first is None and '"content"' in line:
                    first = time.perf_counter() - t
                lines.append(line)
    res["stream_events"] = len(lines)
    res["stream_ends_with_done"] = bool(lines) and lines[-1] == "data: [DONE]"
    res["stream_first_lines"] = lines[:2]
    res["stream_last_lines"] = lines[-3:]
    res["stream_ttft_ms"] = round(1000 * first, 1) if first else None
    text = ""
    for ln in lines:
        if ln.startswith("data: {"):
            ch = json.loads(ln[6:])
            for c in ch.get("choices", []):
                text += c.get("delta", {}).get("content", "") or ""
    res["stream_text_equals_chat_text"] = (
        isinstance(res["chat_body"], dict)
        and text == res["chat_body"]["choices"][0]["message"]["content"]
    )
    # A short service wave: 16 concurrent requests x 64 tokens (ignore_eos), greedy.
    new = 16 if args.quick else 64

    async def wave() -> float:
        async with httpx.AsyncClient(timeout=120) as c:
            t = time.perf_counter()
            rs = await asyncio.gather(*(c.post(f"{url}/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": p}], "max_tokens": new,
                "temperature": 0, "ignore_eos": True}) for p in PROMPTS))  # fmt: skip
            el = time.perf_counter() - t
            assert all(x.status_code == 200 for x in rs), [x.text[:200] for x in rs]
            return sum(x.json()["usage"]["completion_tokens"] for x in rs) / el

    asyncio.run(wave())
    res["service_wave_tokens_per_s"] = [round(asyncio.run(wave()), 1) for _ in range(args.reps)]
    res["metrics"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)


def section_classification(res: dict[str, Any], args: argparse.Namespace, svc: Services) -> None:
    import httpx

    proc = svc.ready("classification", 240)
    url = proc.url
    res["ready"] = True
    res["tasks"] = httpx.get(f"{url}/v1/classify/tasks", timeout=10).json()
    texts = ["I love it, best purchase ever!", "This is the worst service I have ever had.",
             "Cancel my order and refund me please.", "Hello there, good morning!"]  # fmt: skip
    for task in ("sentiment", "intent"):
        r = httpx.post(f"{url}/v1/classify", json={"input": texts, "task": task, "top_k": 2},
                       timeout=60)  # fmt: skip
        res[f"{task}_status"] = r.status_code
        res[task] = (
            [d["labels"] for d in r.json()["data"]] if r.status_code == 200 else r.text[:800]
        )
    r = httpx.post(f"{url}/v1/classify", timeout=60, json={
        "input": ["The striker scored twice in the final.", "Simmer the sauce for ten minutes."],
        "labels": {"sports": "sport and games", "cooking": "food and recipes",
                   "finance": "money and markets"}})  # fmt: skip
    res["custom_labels_status"] = r.status_code
    res["custom_labels"] = (
        [d["labels"][0] for d in r.json()["data"]] if r.status_code == 200 else r.text[:800]
    )
    res["metrics"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)


# -- main ---------------------------------------------------------------------------------------
REPORT: Report


def main() -> int:
    global REPORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=os.environ.get("OUT", str(ROOT / ".run" / "gpu-check")))
    ap.add_argument("--quick", action="store_true", help="small loads (CPU dry run)")
    ap.add_argument("--budget-s", type=float, default=400)
    ap.add_argument("--load-seconds", type=float, default=10)
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument("--inproc-texts", type=int, default=8192)
    ap.add_argument("--embed-batch", type=int, default=64)
    ap.add_argument("--frontends", type=int, default=1, help="embedding FRONTENDS (N > 1: split)")
    ap.add_argument("--forward-workers", type=int, default=0, help="embedding FORWARD_WORKERS")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=0, help="override the LLM's layer count")
    ap.add_argument("--llm-dir", default="/tmp/mf-gpu/smollm2-random")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    REPORT = Report(out, args)
    skip = set(filter(None, args.skip.split(",")))
    svc = Services()
    dev = args.device
    try:
        REPORT.section("env", lambda r: section_env(r, args))
        llm_dir: Path | None = None

        def build(r: dict[str, Any]) -> None:
            nonlocal llm_dir
            llm_dir = build_random_llm(args)
            r["dir"] = str(llm_dir)
            r["files"] = {p.name: p.stat().st_size for p in llm_dir.iterdir()}

        REPORT.section("build_random_llm", build)
        # Start every service now: they load while the earlier sections run.
        common = {"DEVICE": dev, "LOG_LEVEL": "info"}
        starts = {
            "embedding": {**common, "MODEL": str(MINILM), "MAX_BATCH_SIZE": str(args.embed_batch),
                          "FRONTENDS": str(args.frontends),
                          "FORWARD_WORKERS": str(args.forward_workers)},
            "llm": {**common, "MODEL": str(llm_dir or args.llm_dir), "MAX_BATCH_SIZE": "16",
                    "MAX_QUEUE": "64", "CONTEXT_WINDOW": "2048", "DEFAULT_MAX_TOKENS": "32"},
            "classification": {**common, "MODEL": str(MINILM), "BACKEND": "embedding"},
        }  # fmt: skip
        svc_names = {"embedding": "embedding", "llm_service": "llm",
                     "classification": "classification"}  # fmt: skip
        for sec, name in svc_names.items():
            if sec not in skip:
                try:
                    svc.start(name, starts[name])
                except Exception:
                    REPORT.data["errors"][f"start_{name}"] = traceback.format_exc()
        REPORT.save()
        if "embedding" not in skip:
            REPORT.section("embedding", lambda r: section_embedding(r, args, svc))
        if "decoder" not in skip and llm_dir is not None:
            REPORT.section("decoder", lambda r: section_decoder(r, args, llm_dir), need_s=40)
        if "llm_service" not in skip:
            REPORT.section("llm_service", lambda r: section_llm_service(r, args, svc), need_s=15)
        if "classification" not in skip:
            REPORT.section("classification", lambda r: section_classification(r, args, svc),
                           need_s=10)  # fmt: skip
    finally:
        REPORT.data["service_log_tails"] = svc.stop_all()
        REPORT.save()
        with contextlib.suppress(Exception):
            from tests.support.procs import LOG_DIR

            with tarfile.open(out / "service-logs.tar.gz", "w:gz") as tar:
                for p in sorted(LOG_DIR.glob("*.log")):
                    tar.add(p, arcname=p.name)
    errs = REPORT.data["errors"]
    log(f"finished in {REPORT.elapsed():.0f} s; sections with errors: {sorted(errs) or 'none'}")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
