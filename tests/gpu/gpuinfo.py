"""What the run ran on (GPU, driver, library versions) and what the GPU did while load ran.

NVML through ``pynvml`` (nvidia-ml-py, in the device image and the project's pins) first;
``nvidia-smi --query-gpu`` where the library is missing; on a machine with neither (this CPU
box) the sampler records nothing and says so, rather than reporting zeros.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

_SMI_QUERY = "name,driver_version,utilization.gpu,memory.used,power.draw"


def _nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _smi() -> list[str] | None:
    """nvidia-smi's fields for GPU 0, or None without a working nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={_SMI_QUERY}", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = [f.strip() for f in out.stdout.strip().split(",")]
    return fields if out.returncode == 0 and len(fields) == 5 else None


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def identity(device: str) -> dict[str, Any]:
    """The fields every bench-results.json entry of this run carries."""
    import torch

    ident: dict[str, Any] = {
        "device": device,
        "gpu": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "sentence_transformers": _version("sentence_transformers"),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    nv = _nvml()
    if nv is not None:
        with contextlib.suppress(Exception):
            name = nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(0))
            ident["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            drv = nv.nvmlSystemGetDriverVersion()
            ident["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
    if ident["gpu"] is None and (fields := _smi()) is not None:
        ident["gpu"], ident["driver"] = fields[0], fields[1]
    if ident["gpu"] is None and torch.cuda.is_available():
        ident["gpu"] = torch.cuda.get_device_name(0)
    if device == "cpu":
        ident["cpu"] = platform.processor() or platform.machine()
        ident["cpus"] = os.cpu_count()
    return ident


def section_env(res: dict[str, Any], device: str) -> None:
    import torch

    res["identity"] = identity(device)
    res["platform"] = platform.platform()
    res["cpus"] = os.cpu_count()
    res["cuda_available"] = torch.cuda.is_available()
    for mod in ("huggingface_hub", "tokenizers", "fastapi", "starlette", "pydantic", "uvicorn",
                "numpy", "httpx", "vllm"):  # fmt: skip
        res[mod] = _version(mod)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res["capability"] = f"{p.major}.{p.minor}"
        res["memory_gib"] = round(p.total_memory / 2**30, 1)
        res["multiprocessors"] = p.multi_processor_count
        res["bf16_supported"] = torch.cuda.is_bf16_supported()
    elif device == "cuda":
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        res["nvidia_smi"] = r.stdout[-3000:] or r.stderr[-1000:]
    res["gpu_sampler_source"] = GpuSampler().source


class GpuSampler:
    """Samples GPU 0's utilisation, memory and power (and a process' CPU) in the background."""

    def __init__(self, pid: int | None = None, period_s: float = 0.25) -> None:
        self.pid = pid
        self.period = period_s
        self._nv = _nvml()
        self.source = "nvml" if self._nv is not None else ("nvidia-smi" if _smi() else "none")
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self.power_w: list[float] = []
        self.cpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample_gpu(self, handle: Any) -> None:
        if self._nv is not None:
            nv = self._nv
            self.util.append(float(nv.nvmlDeviceGetUtilizationRates(handle).gpu))
            self.mem_mib.append(nv.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            with contextlib.suppress(Exception):
                self.power_w.append(nv.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        elif self.source == "nvidia-smi" and (f := _smi()) is not None:
            self.util.append(float(f[2]))
            self.mem_mib.append(float(f[3]))
            with contextlib.suppress(ValueError):
                self.power_w.append(float(f[4]))

    def _run(self) -> None:
        import psutil

        handle = None
        if self._nv is not None:
            with contextlib.suppress(Exception):
                handle = self._nv.nvmlDeviceGetHandleByIndex(0)
        # The process and its children: with FRONTENDS=N the work is in the children.
        procs: dict[int, psutil.Process] = {}

        def cpu_percent() -> float:
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                if p.pid not in procs:
                    procs[p.pid] = p
                    p.cpu_percent(None)  # the first call only starts the interval
            total = 0.0
            for pid, p in list(procs.items()):
                try:
                    total += p.cpu_percent(None)
                except psutil.Error:
                    del procs[pid]
            return total

        if self.pid:
            with contextlib.suppress(psutil.Error):
                cpu_percent()
        while not self._stop.wait(self.period):
            with contextlib.suppress(Exception):
                self._sample_gpu(handle)
            if self.pid:
                with contextlib.suppress(psutil.Error):
                    self.cpu.append(cpu_percent())

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        """Medians over the load; the first two and the last sample (ramp, wind-down) dropped."""

        def trim(xs: list[float]) -> list[float]:
            return xs[2:-1] if len(xs) > 4 else xs

        out: dict[str, Any] = {"gpu_sampler": self.source, "gpu_samples": len(self.util)}
        if util := trim(self.util):
            out["gpu_util_percent_median"] = round(statistics.median(util), 1)
            out["gpu_util_percent_p90"] = round(sorted(util)[int(0.9 * (len(util) - 1))], 1)
        if mem := trim(self.mem_mib):
            out["gpu_memory_used_mib_max"] = round(max(mem), 0)
        if power := trim(self.power_w):
            out["gpu_power_w_median"] = round(statistics.median(power), 1)
        if cpu := trim(self.cpu):
            out["process_tree_cpu_percent_median"] = round(statistics.median(cpu), 1)
        return out
