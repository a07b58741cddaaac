"""GPU utilisation and memory for ``/metrics``, read through NVML (nvidia-ml-py) at scrape time.

Without an NVIDIA driver (CPU nodes, this dev machine) the collector yields nothing, so the
series simply don't exist there, rather than reading as zero.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("modelfleet.gpu")


class GpuCollector(Collector):
    def __init__(self, service: str) -> None:
        self.service = service
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no driver, no library: nothing to report
            self._nvml = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._nvml is None:
            return
        nv = self._nvml
        util = GaugeMetricFamily(
            "modelfleet_gpu_utilization_ratio", "GPU busy ratio (0-1).", labels=["service", "gpu"]
        )
        used = GaugeMetricFamily(
            "modelfleet_gpu_memory_used_bytes", "GPU memory in use.", labels=["service", "gpu"]
        )
        total = GaugeMetricFamily(
            "modelfleet_gpu_memory_total_bytes", "GPU memory size.", labels=["service", "gpu"]
        )
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                rates = nv.nvmlDeviceGetUtilizationRates(h)
                labels = [self.service, str(i)]
                util.add_metric(labels, rates.gpu / 100.0)
                used.add_metric(labels, float(mem.used))
                total.add_metric(labels, float(mem.total))
        except Exception as exc:  # a flaky driver must not break the whole scrape
            log.warning("NVML query failed: %s", exc)
            return
        yield util
        yield used
        yield total
