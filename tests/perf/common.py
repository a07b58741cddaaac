"""Shared pieces of the benchmarks: wrk runs, medians, RSS, and bench-results.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from modelfleet.devices import reproducible_cpu_math

# In-process baselines use the same CPU math settings as the services' main() (no measurable cost).
reproducible_cpu_math()

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results.json"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Kubernetes autoscaling reacts to CPU load and custom metrics.",
    "The weather in Lisbon is mild in the winter months.",
    "Please summarise the quarterly revenue report for the board meeting.",
    "I loved the film, but the ending felt rushed and unearned.",
    "Transformers process all the tokens of a sequence in parallel.",
    "Our flight was delayed by three hours and nobody told us why.",
    "A good embedding model maps paraphrases to nearby vectors.",
    "Add two cups of flour and a pinch of salt, then stir gently.",
    "The central bank raised interest rates by a quarter point.",
    "She finished the marathon in under four hours on her first try.",
    "Can you book a table for four people at eight tonight?",
    "The library closes early on public holidays.",
    "Solar panels convert sunlight directly into electricity.",
    "My order arrived damaged and I would like a refund.",
]

# Prompts of the decoder benchmarks (and of tests/gpu, so GPU and CPU figures compare).
TOPICS = [
    "a lighthouse keeper", "a lost robot", "the first day of school", "a dragon who hates gold",
    "a city under the sea", "a time-travelling cat", "an old violin", "a secret garden",
    "the last train home", "a storm at sea", "a talking tree", "a space station cook",
    "a village without clocks", "a detective in the rain", "a paper boat", "a mountain rescue",
]  # fmt: skip
PROMPTS = [f"Write a short story about {t}." for t in TOPICS]


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def merge_results(results: dict[str, Any], path: Path = RESULTS) -> None:
    """Merge ``results`` into bench-results.json (one object keyed by benchmark name)."""
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            current = {}
    current.update(results)
    tmp = path.with_name(path.name + ".tmp")  # a run killed mid-write leaves the old file whole
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children, in MiB."""
    p = psutil.Process(pid)
    total = p.memory_info().rss
    for c in p.children(recursive=True):
        total += c.memory_info().rss
    return float(total) / 2**20


class PeakRss:
    """Samples a process' RSS in the background; ``peak`` in MiB."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except psutil.Error:
                return
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


_LUA_POST = """
local bodies = {%(bodies)s}
local headers = {["Content-Type"] = "application/json"%(extra_headers)s}
local counter = 0
local requests = {}
-- Format every request once per thread: the client shares the cores with the server, so the
-- less it does per request the less it skews the measurement.
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "%(path)s", headers, body)
  end
end
request = function()
  counter = counter + 1
  return requests[(counter %% #requests) + 1]
end
done = function(summary, latency, requests)
  io.write(string.format("MFRESULT %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def wrk_post(
    url: str,
    path: str,
    bodies: list[str],
    *,
    connections: int,
    duration_s: int = 10,
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """Drive ``url+path`` with wrk (POST bodies round-robin); requests/s and latency (ms)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make sysdeps installs it)")

    def lua_str(s: str) -> str:
        return json.dumps(s)  # a JSON string literal is a valid Lua string literal here

    extra = "".join(f", [{lua_str(k)}] = {lua_str(v)}" for k, v in (headers or {}).items())
    script = _LUA_POST % {
        "bodies": ", ".join(lua_str(b) for b in bodies),
        "path": path,
        "extra_headers": extra,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        lua = fh.name
    try:
        out = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
             "--timeout", "30s", "-s", lua, url],
            capture_output=True, text=True, timeout=duration_s + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(lua)
    m = re.search(r"MFRESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    req, dur_us, err_status, err_sock, p50, p95, p99, pmax = (int(x) for x in m.groups())
    return {
        "requests": req,
        "rps": req / (dur_us / 1e6),
        "non_2xx": err_status,
        "socket_errors": err_sock,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
        "max_ms": pmax / 1000,
    }


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out
