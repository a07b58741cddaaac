"""What tracing costs the gateway: the same embedding replica behind gateways that differ only in
tracing, wrk rounds interleaved so every side sees the same machine noise.

Run: ``python -m tests.perf.bench_tracing [--round-s 3] [--rounds 3] [--baseline CHECKOUT]``

Sides: ``direct`` (the embedding service itself), ``off`` (this code, no endpoint: the default),
``on`` (this code exporting every request's spans to a real OTLP/HTTP receiver in this process,
sample ratio 1 - the worst case) and, with ``--baseline``, ``before`` (a gateway started from
another checkout, e.g. main before tracing, on the same replica). Requests carry a sampled
``traceparent`` and ``Cache-Control: no-cache, no-store`` (every one reaches the backend). The
replica is untraced, so the figures are the gateway's own cost. Printed: median req/s and
median p50 of each side over the rounds, at 1 connection (latency) and 16 (throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.gateway.conftest import FAST_HEALTH, start_gateway
from tests.perf.common import SENTENCES, median, wrk_post
from tests.support.otlp import OtlpReceiver
from tests.support.procs import LOG_DIR, Proc, free_port, service, wait_port

ROUTE = "/v1/embeddings"
HEADERS = {
    "Cache-Control": "no-cache, no-store",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}


def _baseline_gateway(root: Path, backend: str) -> Proc:
    """A gateway from another checkout (its own code, this interpreter's packages)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MODELFLEET_"))}
    p = "MODELFLEET_GATEWAY_"
    env |= {f"{p}{k}": v for k, v in FAST_HEALTH.items()}
    env |= {
        "PYTHONPATH": f"{root / 'shared'}:{root}",
        f"{p}HOST": "127.0.0.1",
        f"{p}PORT": str(port),
        f"{p}DISCOVERY": "static",
        f"{p}REDIS_URL": "",
        f"{p}EMBEDDING__URLS": backend,
        **{f"{p}{pool.upper()}__URLS": "" for pool in ("llm", "classification", "generation")},
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"gateway-baseline-{port}.log"
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], cwd=root, env=env, stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_port(port, 60)
    return Proc("gateway", popen, port, log_path)


def run(round_s: int, rounds: int, baseline: Path | None) -> dict[str, Any]:
    bodies = [json.dumps({"input": s}) for s in SENTENCES]
    receiver = OtlpReceiver().start()
    procs: list[Proc] = []
    try:
        with service("embedding", {"MAX_BATCH_SIZE": "64"}) as emb:
            sides = {"direct": emb}
            sides["off"] = start_gateway({"embedding": emb.url})
            on_env = {"OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
            sides["on"] = start_gateway({"embedding": emb.url}, env=on_env)
            if baseline is not None:
                sides["before"] = _baseline_gateway(baseline, emb.url)
            procs = [p for name, p in sides.items() if name != "direct"]
            for proc in sides.values():  # warm connections, batcher, allocators
                wrk_post(proc.url, ROUTE, bodies, connections=8, duration_s=1, headers=HEADERS)
            runs: dict[str, dict[int, list[dict[str, float]]]] = {n: {1: [], 16: []} for n in sides}
            for conns in (1, 16):
                for _ in range(rounds):
                    for name, proc in sides.items():
                        runs[name][conns].append(
                            wrk_post(proc.url, ROUTE, bodies, connections=conns,
                                     duration_s=round_s, headers=HEADERS)
                        )  # fmt: skip
    finally:
        for p in procs:
            p.stop()
        receiver.stop()
    return {
        name: {
            f"c{c}": {
                "rps": round(median(r["rps"] for r in rs), 1),
                "p50_ms": round(median(r["p50_ms"] for r in rs), 2),
                "non_2xx": sum(r["non_2xx"] for r in rs),
            }
            for c, rs in by_c.items()
        }
        for name, by_c in runs.items()
    } | {"spans_received": len(receiver.spans)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-s", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    res = run(args.round_s, args.rounds, args.baseline)
    print(json.dumps(res, indent=1))
    sides = [s for s in ("direct", "before", "off", "on") if s in res]
    print(f"{'side':8} {'c1 req/s':>9} {'c1 p50 ms':>10} {'c16 req/s':>10} {'c16 p50 ms':>11}")
    for s in sides:
        a, b = res[s]["c1"], res[s]["c16"]
        print(f"{s:8} {a['rps']:9.1f} {a['p50_ms']:10.2f} {b['rps']:10.1f} {b['p50_ms']:11.2f}")


if __name__ == "__main__":
    main()
