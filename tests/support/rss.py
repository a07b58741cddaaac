"""Resident memory of several processes, sampled in the background, and a growth verdict."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil


@dataclass
class RssSampler:
    """Samples each named pid's RSS (MiB) every ``interval_s`` until stopped."""

    pids: Mapping[str, int]
    interval_s: float = 5.0
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self.t0 = time.monotonic()
        self.samples = {name: [] for name in self.pids}

    def _sample(self) -> None:
        now = time.monotonic() - self.t0
        for name, pid in self.pids.items():
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.samples[name].append((now, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def growth(
    samples: list[tuple[float, float]], warmup_s: float, window_s: float
) -> dict[str, float]:
    """RSS right after warm-up against RSS at the end, each the median of ``window_s``.

    Medians of a window rather than two single samples: a forward pass in flight or a batch of
    responses being written moves RSS by a few MiB from one second to the next.
    """
    if not samples:
        return {"start_mib": 0.0, "end_mib": 0.0, "growth": 0.0, "peak_mib": 0.0}
    end_t = samples[-1][0]
    start = [r for t, r in samples if warmup_s <= t <= warmup_s + window_s] or [samples[0][1]]
    end = [r for t, r in samples if t >= end_t - window_s] or [samples[-1][1]]
    s, e = statistics.median(start), statistics.median(end)
    return {
        "start_mib": round(s, 1),
        "end_mib": round(e, 1),
        "growth": round(e / s - 1, 4) if s else 0.0,
        "peak_mib": round(max(r for _, r in samples), 1),
        "first_mib": round(samples[0][1], 1),
    }
