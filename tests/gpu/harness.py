"""The run's bookkeeping: sections with time limits, a results file rewritten after each one.

A device call is short and costly, so a run must never be lost to one slow or broken part:
every section runs under its own time limit (SIGALRM raises :class:`SectionTimeout` in the main
thread, the only place Python delivers signals), a failure is recorded with its traceback and
the next section runs, and ``gpu-results.json`` is rewritten after each section, so a run cut
short by the call's timeout still returns what it reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_NAME = "gpu-results.json"
ROOT = Path(__file__).resolve().parents[2]
# Built on a CPU machine by ``python -m tests.gpu.prepare_assets``.
ASSETS = ROOT / ".gpu"
MINILM = ASSETS / "minilm-fp16"
LLM_SHAPE = ASSETS / "smollm2-shape"
REF = ASSETS / "embedding-ref.json"


class SectionTimeout(Exception):
    """A section ran past its time limit."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def short(res: dict[str, Any], limit: int = 1500) -> str:
    s = json.dumps(res, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds``."""

    def on_alarm(signum: int, frame: object) -> None:
        raise SectionTimeout(f"section ran past its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Report:
    """Sections' results, timings and errors; saved as JSON after every section."""

    def __init__(self, out: Path, budget_s: float, meta: dict[str, Any],
                 on_save: Callable[[dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        self.out = out
        self.on_save = on_save
        self.budget = budget_s
        self.t0 = time.monotonic()
        self.data: dict[str, Any] = {
            "meta": {**meta, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "timings_s": {},
            "limits_s": {},
            "errors": {},
            "skipped": {},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def save(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.out / (RESULTS_NAME + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.out / RESULTS_NAME)
        if self.on_save is not None:
            try:
                self.on_save(self.data)
            except Exception:  # a summary bug must not cost the raw results
                log(f"!! writing bench-results entries failed:\n{traceback.format_exc()}")

    def skip(self, name: str, why: str) -> None:
        self.data["skipped"][name] = why
        log(f"== {name}: skipped ({why})")
        self.save()

    def section(self, name: str, fn: Callable[[dict[str, Any]], None], limit_s: float) -> None:
        """Run ``fn(results)`` within ``limit_s`` (and the run's budget); record and go on."""
        limit = min(limit_s, self.left())
        if limit < min(10.0, limit_s):
            self.skip(name, f"{self.left():.0f} s of the budget left, section limit {limit_s:.0f}")
            return
        log(f"== {name} (t={self.elapsed():.0f}s, limit {limit:.0f}s)")
        res: dict[str, Any] = {}
        self.data[name] = res
        self.data["limits_s"][name] = round(limit, 1)
        t = time.monotonic()
        try:
            with time_limit(limit):
                fn(res)
        except KeyboardInterrupt:
            self.data["errors"][name] = "interrupted"
            raise
        except BaseException:  # record and go on: the next section may still work
            self.data["errors"][name] = traceback.format_exc()
            log(f"!! {name} failed:\n{traceback.format_exc()}")
        finally:
            self.data["timings_s"][name] = round(time.monotonic() - t, 1)
            self.save()
        log(f"== {name} done in {self.data['timings_s'][name]} s: {short(res)}")


class Services:
    """Services started early (they load while earlier sections run), stopped at the end."""

    def __init__(self) -> None:
        self.procs: dict[str, Any] = {}
        self.start_errors: dict[str, str] = {}

    def start(self, key: str, service: str, env: dict[str, str]) -> None:
        from tests.support.procs import start_service

        try:
            proc = start_service(service, env, wait_ready=False)
        except Exception:
            self.start_errors[key] = traceback.format_exc()
            return
        self.procs[key] = proc
        log(f"started {key} (pid {proc.popen.pid}, port {proc.port})")

    def ready(self, key: str, timeout: float) -> Any:
        """The process once ``/ready`` answers 200 (raises if it exited or never got ready)."""
        from tests.support.procs import wait_until_ready

        if key not in self.procs:
            raise RuntimeError(f"{key} did not start: {self.start_errors.get(key, 'not asked')}")
        proc = self.procs[key]
        t = time.monotonic()
        wait_until_ready(proc, timeout)
        log(f"{key} ready after a further {time.monotonic() - t:.1f} s")
        return proc

    def stop(self, key: str) -> None:
        """Stop one service early, so the GPU and cores are free for what follows."""
        proc = self.procs.get(key)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)

    def stop_all(self) -> dict[str, str]:
        tails = {}
        for key, proc in self.procs.items():
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
            tails[key] = proc.log(3000)
        return tails


def metrics_summary(text: str) -> dict[str, Any]:
    """The fleet series a ``/metrics`` page names, and its GPU lines."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    fleet = sorted(n for n in names if n.startswith("modelfleet_"))
    return {
        "modelfleet_series_names": len(fleet),
        "gpu_series": sorted(n for n in fleet if n.startswith("modelfleet_gpu_")),
        "gpu_lines": [ln for ln in text.splitlines() if ln.startswith("modelfleet_gpu_")][:6],
    }


def cosine_rows(a: Any, b: Any) -> list[float]:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return [round(float(x), 6) for x in num / den]


@dataclass
class Ctx:
    """What every section gets: the options, the services, the report, figures shared across."""

    args: argparse.Namespace
    svc: Services
    report: Report
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return str(self.args.device)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    def ready_timeout(self) -> float:
        return max(5.0, min(240.0, self.report.left()))
