"""Old tree against this one, side by side in one run: gateway overhead and service throughput.

Run: ``python -m tests.perf.bench_compare /tmp/old-checkout`` (a ``git archive`` of the older
commit). The same embedding replica (this tree's) sits behind an old and a new gateway, and
direct/old/new wrk runs alternate round after round so all three see the same machine noise;
an old and a new embedding service are driven the same way for service throughput. A fake
backend that answers at once isolates the gateways' own cost per request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.gateway.conftest import FAST_HEALTH, POOLS
from tests.gateway.fakes import fake
from tests.perf.common import SENTENCES, median, wrk_post
from tests.support.procs import LOG_DIR, Proc, free_port, service, start_redis, wait_until_ready

ROUTE = "/v1/embeddings"
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


@contextmanager
def process_from(
    tree: Path, name: str, env: dict[str, str], module: list[str] | None = None
) -> Iterator[Proc]:
    """``python -m services.<name>`` (or ``module``) from a checkout, on a free port."""
    prefix = f"MODELFLEET_{name.upper()}_"
    port = free_port()
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{tree}/shared:{tree}"}
    full |= {f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port)}
    full |= {prefix + k: v for k, v in env.items()}
    log = LOG_DIR / f"bench-{name}-{port}.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        argv = module or [f"services.{name}"]
        popen = subprocess.Popen([sys.executable, "-m", *argv], cwd=tree, env=full,
                                 stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    proc = Proc(name, popen, port, log)
    try:
        wait_until_ready(proc)
        yield proc
    finally:
        proc.stop()


def gateway_env(backend: str, redis: Proc) -> dict[str, str]:
    env = {"DISCOVERY": "static", **FAST_HEALTH, "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"}
    for pool in POOLS:
        url = backend if pool == "embedding" else ""
        env[f"{pool.upper()}_URLS"] = url  # the old tree's flat setting
        env[f"{pool.upper()}__URLS"] = url  # nested pool settings since the chart contract
    return env


def rounds(urls: dict[str, str], bodies: list[str], *, c: int, s: int, n: int,
           headers: dict[str, str] | None = None) -> dict[str, list[dict[str, float]]]:  # fmt: skip
    out: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
    for i in range(n):
        # Alternate the order, so no target always runs right after the same other one.
        order = list(urls.items()) if i % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            out[name].append(wrk_post(url, ROUTE, bodies, connections=c, duration_s=s,
                                      headers=headers))  # fmt: skip
    return out


def paired(runs: dict[str, list[dict[str, float]]], a: str, b: str, key: str) -> float:
    return median(y[key] - x[key] for x, y in zip(runs[a], runs[b], strict=True))


def run(old: Path) -> dict[str, Any]:
    new = Path(__file__).resolve().parents[2]
    bodies = [json.dumps({"input": s, "model": "all-MiniLM-L6-v2"}) for s in SENTENCES]
    redis = start_redis()
    res: dict[str, Any] = {}
    try:
        with service("embedding", {"MAX_BATCH_SIZE": "64"}) as emb:
            env = gateway_env(emb.url, redis)
            with (
                process_from(old, "gateway", env) as gw_old,
                process_from(new, "gateway", env) as gw_new,
            ):
                urls = {"direct": emb.url, "old": gw_old.url, "new": gw_new.url}
                rounds(urls, bodies, c=8, s=2, n=1, headers=NO_CACHE)  # warm
                r1 = rounds(urls, bodies, c=1, s=3, n=8, headers=NO_CACHE)
                r64 = rounds(urls, bodies, c=64, s=5, n=4, headers=NO_CACHE)
            res["embedding_backend"] = {
                "old_added_p50_ms": round(paired(r1, "direct", "old", "p50_ms"), 3),
                "new_added_p50_ms": round(paired(r1, "direct", "new", "p50_ms"), 3),
                "new_minus_old_p50_ms": round(paired(r1, "old", "new", "p50_ms"), 3),
                "old_rps_ratio_to_direct": round(median(r["rps"] for r in r64["old"])
                                                 / median(r["rps"] for r in r64["direct"]), 3),
                "new_rps_ratio_to_direct": round(median(r["rps"] for r in r64["new"])
                                                 / median(r["rps"] for r in r64["direct"]), 3),
            }  # fmt: skip
        with fake("openai", name="fake") as backend:
            env = gateway_env(backend.url, redis)
            with (
                process_from(old, "gateway", env) as gw_old,
                process_from(new, "gateway", env) as gw_new,
            ):
                urls = {"direct": backend.url, "old": gw_old.url, "new": gw_new.url}
                rounds(urls, bodies, c=8, s=2, n=1, headers=NO_CACHE)
                t1 = rounds(urls, bodies, c=1, s=3, n=6, headers=NO_CACHE)
                t64 = rounds(urls, bodies, c=16, s=3, n=4, headers=NO_CACHE)
            res["trivial_backend"] = {
                "old_added_p50_ms": round(paired(t1, "direct", "old", "p50_ms"), 3),
                "new_added_p50_ms": round(paired(t1, "direct", "new", "p50_ms"), 3),
                "new_over_old_rps": round(median(r["rps"] for r in t64["new"])
                                          / median(r["rps"] for r in t64["old"]), 3),
            }  # fmt: skip
        with (
            process_from(old, "embedding", {"MAX_BATCH_SIZE": "64"}) as e_old,
            process_from(new, "embedding", {"MAX_BATCH_SIZE": "64"}) as e_new,
        ):
            urls = {"old": e_old.url, "new": e_new.url}
            rounds(urls, bodies, c=8, s=2, n=1)
            s64 = rounds(urls, bodies, c=64, s=5, n=4)
            s1 = rounds(urls, bodies, c=1, s=3, n=4)
        res["embedding_service"] = {
            "new_over_old_rps_64": round(median(r["rps"] for r in s64["new"])
                                         / median(r["rps"] for r in s64["old"]), 3),
            "new_minus_old_p50_ms_1": round(paired(s1, "old", "new", "p50_ms"), 3),
        }  # fmt: skip
        res["llm_service"] = llm_old_vs_new(old, new)
    finally:
        redis.stop()
    return res


def llm_old_vs_new(old: Path, new: Path, rounds_n: int = 3, seconds: int = 12) -> dict[str, Any]:
    """The old and the new llm service, 16 concurrent chats x 64 tokens, alternating rounds:
    generated tokens/s from each service's own completion-token counter over the wrk run."""
    from tests.perf.bench_decoder import CONCURRENCY, LLM_ENV, chat_body, completion_tokens
    from tests.perf.common import PROMPTS

    bodies = [json.dumps(chat_body(p)) for p in PROMPTS[:CONCURRENCY]]
    tps: dict[str, list[float]] = {"old": [], "new": []}
    with (
        process_from(old, "llm", LLM_ENV) as l_old,
        process_from(new, "llm", LLM_ENV) as l_new,
    ):
        procs = {"old": l_old, "new": l_new}
        for i in range(rounds_n + 1):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for name in order:
                proc = procs[name]
                before = completion_tokens(proc)
                t0 = time.perf_counter()
                wrk_post(proc.url, "/v1/chat/completions", bodies, connections=CONCURRENCY,
                         duration_s=seconds)  # fmt: skip
                rate = (completion_tokens(proc) - before) / (time.perf_counter() - t0)
                if i > 0:  # round 0 warms both up
                    tps[name].append(rate)
    return {
        "old_tokens_per_s": round(median(tps["old"]), 1),
        "new_tokens_per_s": round(median(tps["new"]), 1),
        "new_over_old": round(
            median(n / o for o, n in zip(tps["old"], tps["new"], strict=True)), 3
        ),
    }


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1])), indent=2))
