"""The measurements of the fleet report, all in one run on one fleet.

- Rising concurrency: every route at once, ``c`` connections per encoder route and
  ``min(c, DECODER_MAX)`` per decoder route (the small llm and generation services batch four
  sequences; more connections would only queue), for ``level_s`` seconds per level. A quarter of
  the requests repeat a text, so the cache has something to hit.
- Batch sizes: each service's ``modelfleet_batch_size`` histogram (encoders) and the decoders'
  step sizes, read from ``/metrics`` before and after each level.
- Direct vs gateway: embeddings at 16 connections straight to the service, then through the
  gateway with ``Cache-Control: no-cache, no-store``, alternated twice.
- Cache on vs off: embeddings through the gateway at 16 connections with half the texts
  repeated, with and without ``Cache-Control: no-cache, no-store``.
- RSS of every process, every 2 s, throughout.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from tests.support.fleet import start_fleet
from tests.support.load import Route, WrkRun, mix, run_mix
from tests.support.rss import RssSampler

LEVELS = (1, 4, 16, 32)
DECODER_MAX = 4
DECODERS = {"chat", "completions", "summarize"}
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
COMPARE_CONNECTIONS = 16
_SERIES = re.compile(r"^(modelfleet_\w+?)(?:\{[^}]*\})? ([0-9.eE+-]+)$")


def metric_sums(url: str) -> dict[str, float]:
    """Sum of each ``modelfleet_*_sum`` / ``_count`` series (across labels) on ``url``."""
    out: dict[str, float] = {}
    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        m = _SERIES.match(line)
        if m and m.group(1).endswith(("_sum", "_count")):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def mean_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean batch size of a service over the interval between two scrapes."""
    name = "modelfleet_batch_size"  # items per forward pass, or sequences per decoding step
    n = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
    if n <= 0:
        return None
    return (after[name + "_sum"] - before.get(name + "_sum", 0.0)) / n


def _level(fleet_url: str, services: dict[str, str], c: int, level_s: float) -> dict[str, Any]:
    conns = {r.name: min(c, DECODER_MAX) if r.name in DECODERS else c for r in mix()}
    before = {name: metric_sums(url) for name, url in services.items()}
    t0 = time.monotonic()
    results = [r.result() for r in run_mix(fleet_url, mix(), level_s, connections=conns)]
    after = {name: metric_sums(url) for name, url in services.items()}
    return {
        "concurrency": c,
        "seconds": round(time.monotonic() - t0, 1),
        "routes": results,
        "mean_batch": {n: mean_batch(before[n], after[n]) for n in services},
    }


def _embeddings(url: str, seconds: float, repeat: float, headers: dict[str, str] | None) -> Any:
    route = Route("embeddings", "/v1/embeddings", mix()[0].body, mix()[0].words, 16)
    return WrkRun(url, route, seconds, connections=COMPARE_CONNECTIONS, repeat_share=repeat,
                  headers=headers).result()  # fmt: skip


def measure(levels: tuple[int, ...], level_s: float, compare_s: float) -> dict[str, Any]:
    t_start = time.monotonic()
    fl = start_fleet()
    startup_s = time.monotonic() - t_start
    services = {name: p.url for name, p in fl.services.items()}
    try:
        pids = {name: p.popen.pid for name, p in fl.procs().items()}
        with RssSampler(pids, interval_s=2.0) as rss:
            # Warm every path once (connections, allocators, the decoders' first batches).
            for r in run_mix(fl.gateway.url, mix(), 5):
                r.result()
            per_level = [_level(fl.gateway.url, services, c, level_s) for c in levels]
            direct, through = [], []
            for _ in range(2):
                direct.append(_embeddings(services["embedding"], compare_s / 2, 0.0, None))
                through.append(_embeddings(fl.gateway.url, compare_s / 2, 0.0, NO_CACHE))
            cache_off = _embeddings(fl.gateway.url, compare_s, 0.5, NO_CACHE)
            cache_on = _embeddings(fl.gateway.url, compare_s, 0.5, None)
    finally:
        fl.stop()
    return {
        "levels": per_level,
        "direct_vs_gateway": {"direct": direct, "gateway": through},
        "cache": {"off": cache_off, "on": cache_on},
        "rss": {n: [[round(t, 1), round(v, 1)] for t, v in s] for n, s in rss.samples.items()},
        "startup_s": round(startup_s, 1),
        "total_s": round(time.monotonic() - t_start, 1),
        "level_seconds": level_s,
        "decoder_max_connections": DECODER_MAX,
    }
