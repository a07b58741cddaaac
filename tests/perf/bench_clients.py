"""h1.py against aiohttp's and httpx's clients on the gateway-overhead benchmark, in one run.

Run: ``python -m tests.perf.bench_clients``. One embedding replica; three gateways in front of
it that differ only in their forwarding client (``tests/perf/upstream_clients.py``). Direct and
gateway wrk runs alternate round after round; added p50 latency is the median of per-round
differences, throughput a ratio of medians at 64 clients.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.perf.bench_compare import NO_CACHE, gateway_env, paired, process_from, rounds
from tests.perf.common import SENTENCES, median
from tests.support.procs import service, start_redis

CLIENTS = ("h1", "aiohttp", "httpx")


def run() -> dict[str, Any]:
    tree = Path(__file__).resolve().parents[2]
    bodies = [json.dumps({"input": s, "model": "all-MiniLM-L6-v2"}) for s in SENTENCES]
    redis = start_redis()
    try:
        with service("embedding", {"MAX_BATCH_SIZE": "64"}) as emb, ExitStack() as stack:
            env = gateway_env(emb.url, redis)
            urls = {"direct": emb.url}
            for c in CLIENTS:
                module = ["tests.perf.upstream_clients", c]
                urls[c] = stack.enter_context(process_from(tree, "gateway", env, module)).url
            rounds(urls, bodies, c=8, s=2, n=1, headers=NO_CACHE)  # warm
            r1 = rounds(urls, bodies, c=1, s=3, n=6, headers=NO_CACHE)
            r64 = rounds(urls, bodies, c=64, s=4, n=3, headers=NO_CACHE)
    finally:
        redis.stop()
    direct_rps = median(r["rps"] for r in r64["direct"])
    return {
        c: {
            "added_p50_ms": round(paired(r1, "direct", c, "p50_ms"), 3),
            "rps_ratio_to_direct": round(median(r["rps"] for r in r64[c]) / direct_rps, 3),
            "failed": sum(r["non_2xx"] + r["socket_errors"] for r in r1[c] + r64[c]),
        }
        for c in CLIENTS
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
