"""Gateway overhead against calling the embedding service directly, and cache-hit speed.

Run: ``python -m tests.perf.bench_gateway`` (or ``make bench``). One embedding process and one
gateway in front of it. Direct and gateway runs alternate, round after round, so both see the
same machine noise; the added latency is the median over rounds of (gateway - direct), the
throughput ratio a ratio of medians. Overhead requests send
``Cache-Control: no-cache, no-store``, so every one goes to the backend; the cache-hit runs
repeat 16 bodies that are all in Redis.

The added latency is also measured against two fakes: one that answers at once (the gateway's
own CPU cost per request) and one that sleeps 15 ms, about the embedding's latency, without
using the CPU. The difference between those two is what waking a gateway that sat idle through
the backend's work costs on this machine (a VM: tenths of a millisecond), which a direct call
does not pay; the embedding figure adds CPU contention with the model on the same 2 cores.
"""

from __future__ import annotations

import json
from typing import Any

import psutil

from tests.gateway.conftest import start_gateway
from tests.gateway.fakes import fake
from tests.perf.common import SENTENCES, PeakRss, median, merge_results, wrk_post
from tests.support.procs import Proc, service, start_redis

# Many short rounds: other work on the machine moves the backend's latency by several ms from
# one second to the next, and short alternating runs make both paths see the same moments.
ROUNDS = 12
ROUND_S = 3
ROUNDS_THROUGHPUT = 6
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
ROUTE = "/v1/embeddings"
# The gateway's defaults, access log (one JSON line per request) included.
GW_ENV: dict[str, str] = {}


def _interleaved(
    direct_url: str,
    gw_url: str,
    bodies: list[str],
    *,
    connections: int,
    duration_s: int,
    rounds: int,
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    direct, through = [], []
    for _ in range(rounds):
        direct.append(
            wrk_post(direct_url, ROUTE, bodies, connections=connections, duration_s=duration_s)
        )
        through.append(
            wrk_post(
                gw_url,
                ROUTE,
                bodies,
                connections=connections,
                duration_s=duration_s,
                headers=NO_CACHE,
            )
        )
    return direct, through


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _failures(runs: list[dict[str, float]]) -> int:
    return int(sum(r["non_2xx"] + r["socket_errors"] for r in runs))


def _added(direct: list[dict[str, float]], through: list[dict[str, float]], key: str) -> float:
    return median(r[key] for r in through) - median(r[key] for r in direct)


def _paired(direct: list[dict[str, float]], through: list[dict[str, float]], key: str) -> float:
    return median(g[key] - d[key] for d, g in zip(direct, through, strict=True))


def run(duration_s: int = 5) -> dict[str, Any]:
    bodies = [json.dumps({"input": s, "model": "all-MiniLM-L6-v2"}) for s in SENTENCES]
    redis = start_redis()
    try:
        with service("embedding", {"MAX_BATCH_SIZE": "64"}) as emb:
            gw = start_gateway({"embedding": emb.url}, redis, GW_ENV)
            try:
                with PeakRss(gw.popen.pid) as rss:
                    # Warm both paths (connections, batcher, allocators).
                    wrk_post(emb.url, ROUTE, bodies, connections=8, duration_s=2)
                    wrk_post(gw.url, ROUTE, bodies, connections=8, duration_s=2, headers=NO_CACHE)
                    d1, g1 = _interleaved(
                        emb.url, gw.url, bodies, connections=1, duration_s=ROUND_S, rounds=ROUNDS
                    )
                    cpu0 = _cpu_s(gw.popen.pid)
                    d64, g64 = _interleaved(
                        emb.url,
                        gw.url,
                        bodies,
                        connections=64,
                        duration_s=duration_s + 3,
                        rounds=ROUNDS_THROUGHPUT,
                    )
                    # The gateway is idle during the direct runs (health checks aside).
                    cpu_s = _cpu_s(gw.popen.pid) - cpu0
                    cpu_ms = cpu_s * 1000 / sum(r["requests"] for r in g64)
                    wrk_post(gw.url, ROUTE, bodies, connections=1, duration_s=1)  # fill cache
                    hit1 = [
                        wrk_post(gw.url, ROUTE, bodies, connections=1, duration_s=duration_s)
                        for _ in range(2)
                    ]
                    hit64 = [
                        wrk_post(gw.url, ROUTE, bodies, connections=64, duration_s=duration_s)
                        for _ in range(2)
                    ]
            finally:
                gw.stop()
        trivial = _fake_backend(bodies, redis, duration_s)
        idle = _fake_backend(bodies, redis, duration_s, reply_delay_s=0.015)
    finally:
        redis.stop()

    # Each round pairs a direct run with the gateway run right after it; the median of the
    # per-round differences cancels the slow drifts of a shared machine that a difference of
    # two medians keeps.
    added_p50 = _paired(d1, g1, "p50_ms")
    added_p99 = _paired(d1, g1, "p99_ms")
    ratio = median(r["rps"] for r in g64) / median(r["rps"] for r in d64)
    hit_p50 = median(r["p50_ms"] for r in hit1)
    failures = _failures(d1 + g1 + d64 + g64 + hit1 + hit64)
    return {
        "gateway_overhead": {
            "added_p50_ms": round(added_p50, 3),
            "added_p99_ms": round(added_p99, 3),
            "direct_p50_ms": round(median(r["p50_ms"] for r in d1), 3),
            "gateway_p50_ms": round(median(r["p50_ms"] for r in g1), 3),
            "direct_p99_ms": round(median(r["p99_ms"] for r in d1), 3),
            "gateway_p99_ms": round(median(r["p99_ms"] for r in g1), 3),
            "difference_of_medians_p50_ms": round(_added(d1, g1, "p50_ms"), 3),
            "difference_of_medians_p99_ms": round(_added(d1, g1, "p99_ms"), 3),
            "per_round_added_p50_ms": [
                round(g["p50_ms"] - d["p50_ms"], 3) for d, g in zip(d1, g1, strict=True)
            ],
            "trivial_backend_added_p50_ms": trivial["added_p50_ms"],
            "trivial_backend_added_p99_ms": trivial["added_p99_ms"],
            "sleeping_15ms_backend_added_p50_ms": idle["added_p50_ms"],
            "sleeping_15ms_backend_added_p99_ms": idle["added_p99_ms"],
            "rounds": ROUNDS,
            "failed_requests": failures,
            "target": "added p50 <= 1 ms, p99 <= 5 ms (concurrency 1)",
            "met": added_p50 <= 1.0 and added_p99 <= 5.0 and failures == 0,
        },
        "gateway_throughput": {
            "direct_rps": round(median(r["rps"] for r in d64), 1),
            "gateway_rps": round(median(r["rps"] for r in g64), 1),
            "ratio": round(ratio, 3),
            "per_round_ratio": [
                round(g["rps"] / d["rps"], 3) for d, g in zip(d64, g64, strict=True)
            ],
            "gateway_cpu_ms_per_request": round(cpu_ms, 3),
            "rounds": ROUNDS_THROUGHPUT,
            "clients": 64,
            "target": ">= 0.8 of direct",
            "met": ratio >= 0.8,
        },
        "gateway_cache_hits": {
            "p50_ms": round(hit_p50, 3),
            "p99_ms": round(median(r["p99_ms"] for r in hit1), 3),
            "rps_1_client": round(median(r["rps"] for r in hit1), 1),
            "rps_64_clients": round(median(r["rps"] for r in hit64), 1),
            "target": "p50 <= 2 ms",
            "met": hit_p50 <= 2.0,
        },
        "gateway_peak_rss": {
            "peak_rss_mib": round(rss.peak, 1),
            "target": "informational",
        },
    }


def _fake_backend(
    bodies: list[str], redis: Proc, duration_s: int, reply_delay_s: float = 0.0
) -> dict[str, float]:
    """Added latency over a fake backend that answers at once (the gateway's own cost) or
    after sleeping ``reply_delay_s`` without using the CPU (adds waking an idle gateway)."""
    with fake("openai", name="fake", reply_delay_s=reply_delay_s) as backend:
        gw = start_gateway({"embedding": backend.url}, redis, GW_ENV)
        try:
            wrk_post(gw.url, ROUTE, bodies, connections=1, duration_s=1, headers=NO_CACHE)
            d, g = _interleaved(
                backend.url, gw.url, bodies, connections=1, duration_s=duration_s, rounds=3
            )
        finally:
            gw.stop()
    return {
        "added_p50_ms": round(_paired(d, g, "p50_ms"), 3),
        "added_p99_ms": round(_paired(d, g, "p99_ms"), 3),
    }


if __name__ == "__main__":
    res = run()
    merge_results(res)
    print(json.dumps(res, indent=2))
