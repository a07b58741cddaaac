"""Embedding service throughput and latency against in-process SentenceTransformer.encode.

Run: ``python -m tests.perf.bench_embedding`` (or ``make bench``). Rounds alternate between the
in-process baseline and the service so both see the same machine noise; medians are reported.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from modelfleet.resolve import packaged_embedding_dir
from tests.perf.common import SENTENCES, PeakRss, median, merge_results, wrk_post
from tests.support.procs import service

ROUNDS = 3
BATCH_SIZES = (16, 32, 64)
N_INPROC = 512


def inprocess_best(model: Any) -> tuple[float, int]:
    """Best sentences/s of ``encode`` over the batch sizes, and that batch size."""
    texts = (SENTENCES * (N_INPROC // len(SENTENCES) + 1))[:N_INPROC]
    best = (0.0, 0)
    for bs in BATCH_SIZES:
        t0 = time.perf_counter()
        model.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
        rate = len(texts) / (time.perf_counter() - t0)
        best = max(best, (rate, bs))
    return best


def run(duration_s: int = 10) -> dict[str, Any]:
    # Same tokenizer threading as the service process gets from tests.support.procs.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_embedding_dir()), device="cpu")
    model.encode(SENTENCES, show_progress_bar=False)
    bodies = [json.dumps({"input": s, "model": "all-MiniLM-L6-v2"}) for s in SENTENCES]
    inproc: list[float] = []
    best_bs: list[int] = []
    served: list[float] = []
    failures = 0
    with service("embedding", {"MAX_BATCH_SIZE": "64"}) as proc, PeakRss(proc.popen.pid) as rss:
        # Warm the server's batcher path before measuring.
        wrk_post(proc.url, "/v1/embeddings", bodies, connections=64, duration_s=2)
        for _ in range(ROUNDS):
            rate, bs = inprocess_best(model)
            inproc.append(rate)
            best_bs.append(bs)
            r = wrk_post(proc.url, "/v1/embeddings", bodies, connections=64, duration_s=duration_s)
            served.append(r["rps"])
            failures += int(r["non_2xx"] + r["socket_errors"])
        idle = wrk_post(proc.url, "/v1/embeddings", bodies, connections=1, duration_s=5)
    ratio = median(served) / median(inproc)
    return {
        "embedding_throughput": {
            "service_sentences_per_s": round(median(served), 1),
            "inprocess_best_sentences_per_s": round(median(inproc), 1),
            "inprocess_best_batch_size": max(set(best_bs), key=best_bs.count),
            "clients": 64,
            "failed_requests": failures,
            "ratio": round(ratio, 3),
            "target": ">= 0.9",
            "met": ratio >= 0.9,
        },
        "embedding_idle_latency": {
            "p50_ms": round(idle["p50_ms"], 2),
            "p95_ms": round(idle["p95_ms"], 2),
            "target": "p50 <= 200 ms",
            "met": idle["p50_ms"] <= 200,
        },
        "embedding_peak_rss": {
            "peak_rss_mib": round(rss.peak, 1),
            "target": "<= 1024 MiB",
            "met": rss.peak <= 1024,
        },
    }


if __name__ == "__main__":
    res = run()
    merge_results(res)
    print(json.dumps(res, indent=2))
