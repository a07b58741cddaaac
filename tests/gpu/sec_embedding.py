"""Embedding sections: the service against the CPU fp32 reference, then its throughput.

Target (issue 16): 64 clients of single-sentence requests through the service reach >= 0.5 of
in-process ``SentenceTransformer.encode`` at its best batch size, on the same device and dtype.
The service runs with one HTTP front-end, then with ``FRONTENDS=4`` (four front-ends feeding one
model worker with two forward threads).
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.gpu.gpuinfo import GpuSampler
from tests.gpu.harness import MINILM, REF, Ctx, cosine_rows, log, metrics_summary
from tests.gpu.loadgen import closed_loop
from tests.perf.common import SENTENCES

CLIENTS = 64


def service_env(ctx: Ctx, frontends: int) -> dict[str, str]:
    env = {"DEVICE": ctx.device, "LOG_LEVEL": "info", "MODEL": str(MINILM),
           "MAX_BATCH_SIZE": str(ctx.args.embed_batch)}  # fmt: skip
    if frontends > 1:
        # Two forward threads, each on its own CUDA stream: one batch's copies and launches
        # overlap the other's kernels (the split's point on a GPU).
        env["FRONTENDS"], env["FORWARD_WORKERS"] = str(frontends), "2"
    return env


def section_correctness(res: dict[str, Any], ctx: Ctx) -> None:
    """The service's vectors against fp32 CPU ones, its extra routes, in-process dtypes."""
    import httpx
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from modelfleet.devices import torch_dtype

    ref = json.loads(REF.read_text())
    ref_emb = np.asarray(ref["embeddings_fp32_cpu"], dtype=np.float32)
    res["fp16_weights_cpu_cosine_min"] = ref["fp16_weights_cpu_fp32_cosine_min"]
    url = ctx.svc.ready("embedding", ctx.ready_timeout()).url
    res["v1_models"] = httpx.get(f"{url}/v1/models", timeout=10).json()
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ref["sentences"], "model": "m"},
                   timeout=60)  # fmt: skip
    res["embeddings_status"] = r.status_code
    body = r.json()
    served = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    cos = cosine_rows(served, ref_emb)
    res["service_vs_cpu_fp32_cosine_min"] = min(cos)
    res["cosine_ok_ge_0_99"] = min(cos) >= 0.99
    res["truncated_flags"] = [bool(d.get("truncated")) for d in body["data"]]
    rb = httpx.post(f"{url}/v1/embeddings", json={"input": ref["sentences"][:2],
                    "encoding_format": "base64", "dimensions": 128}, timeout=30)  # fmt: skip
    res["base64_dim128_status"] = rb.status_code
    docs = ["stock prices fell", "how to recover a forgotten password"]
    sim = httpx.post(f"{url}/v1/similarity", timeout=30,
                     json={"query": "reset my password", "documents": docs})  # fmt: skip
    res["similarity"] = sim.json() if sim.status_code == 200 else sim.text[:500]
    res["empty_input_status"] = httpx.post(f"{url}/v1/embeddings", json={"input": ""},
                                           timeout=10).status_code  # fmt: skip
    res["metrics"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)
    ctx.report.save()

    # Which dtype did the service run in? In-process encodes on the same device say.
    svc_dtype = torch_dtype("auto", ctx.device)
    res["service_expected_dtype"] = str(svc_dtype)
    per_dtype = {}
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        if ctx.device == "cpu" and dt is not torch.float32:
            continue
        m = SentenceTransformer(str(MINILM), device=ctx.device, model_kwargs={"dtype": dt})
        e = m.encode(ref["sentences"], normalize_embeddings=True, convert_to_numpy=True)
        per_dtype[str(dt)] = {
            "vs_cpu_fp32_min": min(cosine_rows(e, ref_emb)),
            "vs_service_max_abs_diff": float(np.abs(np.asarray(e, np.float32) - served).max()),
        }
        del m
    res["inprocess_by_dtype"] = per_dtype


def inprocess_best(ctx: Ctx) -> dict[str, Any]:
    """In-process ``encode`` sentences/s by batch size (best of two passes each), measured once."""
    if "embedding_inprocess" in ctx.shared:
        return dict(ctx.shared["embedding_inprocess"])
    import torch
    from sentence_transformers import SentenceTransformer

    from modelfleet.devices import torch_dtype

    dev = ctx.device
    dtype = torch_dtype("auto", dev)
    model = SentenceTransformer(str(MINILM), device=dev, model_kwargs={"dtype": dtype})
    n = 256 if ctx.quick else ctx.args.inproc_texts
    texts = (SENTENCES * (n // len(SENTENCES) + 1))[:n]
    model.encode(texts[:256], batch_size=64, show_progress_bar=False)  # warm-up
    rates: dict[int, float] = {}
    with GpuSampler() as gpu:
        for bs in (32, 64) if ctx.quick else (32, 64, 128, 256):
            best = 0.0
            for _ in range(2):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model.encode(texts, batch_size=bs, normalize_embeddings=True,
                             show_progress_bar=False)  # fmt: skip
                if dev == "cuda":
                    torch.cuda.synchronize()
                best = max(best, n / (time.perf_counter() - t))
            rates[bs] = round(best, 1)
    del model
    best_bs = max(rates, key=lambda k: rates[k])
    out = {"sentences_per_s_by_batch": rates, "best_batch": best_bs, "dtype": str(dtype),
           "best_sentences_per_s": rates[best_bs], **gpu.summary()}  # fmt: skip
    ctx.shared["embedding_inprocess"] = out
    return dict(out)


def section_throughput(res: dict[str, Any], ctx: Ctx, key: str, frontends: int) -> None:
    """64 single-sentence clients through the service, against the in-process best."""
    import httpx

    proc = ctx.svc.ready(key, ctx.ready_timeout())
    url = f"{proc.url}/v1/embeddings"
    res["frontends"] = frontends
    bodies = [json.dumps({"input": s, "model": "m"}).encode() for s in SENTENCES]
    cprocs = ctx.args.client_procs
    dur = 3.0 if ctx.quick else ctx.args.load_seconds
    closed_loop(url, bodies, CLIENTS, cprocs, 1.0 if ctx.quick else 2.0)  # warm the batcher
    with GpuSampler(proc.popen.pid) as gpu:
        one = closed_loop(url, bodies, CLIENTS, cprocs, dur)
    res["service_64_clients_1_input"] = {**one, **gpu.summary()}
    log(f"{key}: {res['service_64_clients_1_input']}")
    ctx.report.save()
    # The same load with 16 inputs per request: how much of any gap is per-request overhead.
    many = closed_loop(url, [json.dumps({"input": SENTENCES}).encode()], CLIENTS, cprocs, dur / 2)
    many["sentences_per_s"] = round(many["requests_per_s"] * len(SENTENCES), 1)
    res["service_64_clients_16_inputs"] = many
    res["metrics"] = metrics_summary(httpx.get(f"{proc.url}/metrics", timeout=10).text)
    ctx.report.save()
    inproc = inprocess_best(ctx)
    res["inprocess"] = inproc
    svc_rate = one["requests_per_s"]
    res["summary"] = {
        "service_sentences_per_s": svc_rate,
        "inprocess_best_sentences_per_s": inproc["best_sentences_per_s"],
        "inprocess_best_batch": inproc["best_batch"],
        "ratio_service_over_inprocess": round(svc_rate / inproc["best_sentences_per_s"], 3),
        "ratio_16_inputs_per_request": round(
            many["sentences_per_s"] / inproc["best_sentences_per_s"], 3
        ),
        "failed": one["non_200"] + one["errors"],
    }
