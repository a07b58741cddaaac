"""Load generators for the GPU run: asyncio + httpx, since wrk is not on the device machine.

The device image has httpx (and uvloop) but no wrk, and nothing can be installed there beyond
carried wheels, so the closed-loop load below is Python. It runs in separate processes
(``client_procs``) so the client is not what limits a fast service: each process drives its
share of the connections on its own event loop. It costs more CPU per request than wrk (not
measured side by side here), which is why the device run gives it 4 of its 16 cores; what it
reports is requests the service completed, so a slow client can only understate the service.

:func:`stream_load` is the llm's load: ``concurrency`` streaming chat requests at all times,
the time to each stream's first content chunk (TTFT) and the completion tokens the streams
report in their final usage chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(1000 * s[min(len(s) - 1, int(p * len(s)))], 2)


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


def closed_loop(url: str, bodies: list[bytes], clients: int, procs: int,
                duration: float) -> dict[str, Any]:  # fmt: skip
    """``clients`` connections posting back to back for ``duration`` s, over ``procs`` processes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = max(1, min(procs, clients))
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_load_worker, args=(url, bodies, n, duration, q)) for n in per]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    try:
        results = [q.get(timeout=duration + 60) for _ in workers]
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    elapsed = time.perf_counter() - t0
    ok = sum(r["ok"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    return {
        "clients": clients,
        "client_processes": procs,
        "duration_s": duration,
        "ok": ok,
        "non_200": sum(r["non_200"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "requests_per_s": round(ok / duration, 1),
        "wall_incl_spawn_s": round(elapsed, 1),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
    }


async def _stream_one(client: Any, url: str, body: dict[str, Any]) -> tuple[float, int]:
    """(seconds to the first content chunk, completion tokens from the final usage chunk)."""
    t0 = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():  # read to the end, so the slot frees normally
            if not line.startswith("data: {"):
                continue
            if first is None and '"content"' in line:
                chunk = json.loads(line[6:])
                if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - t0
            if '"usage"' in line:
                usage = json.loads(line[6:]).get("usage") or {}
                tokens = int(usage.get("completion_tokens", 0))
    if first is None:
        raise RuntimeError("stream ended without content")
    return first, tokens


def stream_load(url: str, prompts: list[str], *, concurrency: int, max_tokens: int,
                duration: float, min_per_stream: int = 1) -> dict[str, Any]:  # fmt: skip
    """``concurrency`` streams busy for ``duration`` s, each sending ``min_per_stream`` at least."""
    import httpx

    async def go() -> dict[str, Any]:
        ttft: list[float] = []
        tokens = failed = 0
        limits = httpx.Limits(max_connections=concurrency * 2)
        end = time.perf_counter() + duration
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:

            async def stream(k: int) -> None:
                nonlocal tokens, failed
                sent = 0
                while sent < min_per_stream or time.perf_counter() < end:
                    msg = {"role": "user", "content": prompts[(k + sent) % len(prompts)]}
                    body = {"model": "m", "stream": True, "temperature": 0, "ignore_eos": True,
                            "max_tokens": max_tokens, "stream_options": {"include_usage": True},
                            "messages": [msg]}  # fmt: skip
                    sent += 1
                    try:
                        first, n = await _stream_one(client, url, body)
                    except Exception:
                        failed += 1
                        continue
                    ttft.append(first)
                    tokens += n

            t0 = time.perf_counter()
            await asyncio.gather(*(stream(k) for k in range(concurrency)))
            elapsed = time.perf_counter() - t0
        return {
            "concurrency": concurrency,
            "max_tokens": max_tokens,
            "requests": len(ttft),
            "failed": failed,
            "elapsed_s": round(elapsed, 2),
            "tokens_per_s": round(tokens / elapsed, 1),
            "ttft_p50_ms": _pct(ttft, 0.5),
            "ttft_p95_ms": _pct(ttft, 0.95),
        }

    return asyncio.run(go())
