"""The GPU run cannot rot unseen: its CPU dry run, time limits, entries and carry size, on CPU.

The device machine is lent to few sessions and for minutes, so whatever breaks the script must
break here first: the dry run of its cheapest section through the real entry point, the
per-section time limit and budget, the bench-results.json entries, and the size of the tree
that a device call carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.gpu import results, wheels
from tests.gpu.harness import ROOT, Report


def test_cpu_dry_run_writes_identity_runs_engine_checks_and_skips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}"}
    r = subprocess.run(
        [sys.executable, "-m", "tests.gpu.bench_gpu", "--device", "cpu", "--quick",
         "--only", "env,engine_checks,vllm", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((out / "gpu-results.json").read_text())
    ident = data["env"]["identity"]
    assert ident["device"] == "cpu" and ident["torch"] and ident["transformers"]
    assert ident["date"] and set(results.RUN_FIELDS) <= set(ident)
    assert data["errors"] == {}
    assert "env" in data["timings_s"] and data["limits_s"]["env"] > 0
    # The engine's checks run on the CPU as they will on the GPU (packaged model, no assets).
    checks = data["engine_checks"]
    assert checks["batch_invariance_pass"] and checks["kv_accounting_pass"], checks
    assert checks["n3_choices_equal_alone"] and checks["logits_device"] == ["cpu"]
    assert checks["seeded_sampling_same_in_a_batch"]
    # No prepared assets here: the sections that need them are skipped with a reason.
    if not __import__("importlib.util").util.find_spec("vllm"):
        assert "vllm" in data["skipped"]


def test_a_section_past_its_limit_is_cut_and_the_next_still_runs(tmp_path: Path) -> None:
    report = Report(tmp_path, budget_s=60, meta={})

    def hangs(res: dict[str, Any]) -> None:
        res["started"] = True
        threading.Event().wait(30)  # a section stuck in a blocking call
        res["finished"] = True

    report.section("stuck", hangs, limit_s=0.5)
    report.section("next", lambda res: res.update(ran=True), limit_s=5)
    saved = json.loads((tmp_path / "gpu-results.json").read_text())
    assert saved["stuck"] == {"started": True}
    assert "SectionTimeout" in saved["errors"]["stuck"]
    assert saved["timings_s"]["stuck"] < 5
    assert saved["next"] == {"ran": True}


def test_a_section_the_budget_cannot_fit_is_skipped(tmp_path: Path) -> None:
    report = Report(tmp_path, budget_s=3, meta={})
    report.section("big", lambda res: res.update(ran=True), limit_s=60)
    saved = json.loads((tmp_path / "gpu-results.json").read_text())
    assert "big" in saved["skipped"] and "big" not in saved


RAW: dict[str, Any] = {
    "env": {"identity": {"device": "cuda", "gpu": "NVIDIA H200", "driver": "580.159.04",
                         "cuda": "13.0", "torch": "2.11.0", "transformers": "5.17.0",
                         "date": "2026-12-04"}},
    "decoder_throughput": {"engine_median": 1500.0, "generate_median": 700.0, "prompts": 16,
                           "new_tokens": 64, "ratio_engine_over_generate": 2.143},
    "llm_service": {"load_16_streams": {"ttft_p50_ms": 250.0, "tokens_per_s": 1200.0,
                                        "concurrency": 16, "max_tokens": 64,
                                        "gpu_util_percent_median": 41.0, "gpu_sampler": "nvml"}},
    "embedding_throughput": {"frontends": 1, "summary": {"ratio_service_over_inprocess": 0.4}},
}  # fmt: skip


def test_entries_carry_the_run_and_judge_each_target() -> None:
    got = results.entries(RAW)
    assert set(got) == {"gpu_decoder_engine_vs_generate", "gpu_llm_ttft_16_streams",
                        "gpu_llm_service_vs_generate", "gpu_utilisation_saturation",
                        "gpu_embedding_service_vs_inprocess"}  # fmt: skip
    for entry in got.values():
        assert entry["gpu"] == "NVIDIA H200" and entry["driver"] == "580.159.04"
        assert entry["date"] == "2026-12-04" and entry["torch"] == "2.11.0"
    assert got["gpu_decoder_engine_vs_generate"]["met"] is True
    assert got["gpu_llm_ttft_16_streams"]["met"] is False
    assert got["gpu_utilisation_saturation"]["met"] is False
    assert got["gpu_embedding_service_vs_inprocess"]["met"] is False


def test_entries_merge_beside_the_cpu_benchmarks(tmp_path: Path) -> None:
    path = tmp_path / "bench-results.json"
    path.write_text(json.dumps({"embedding_throughput": {"ratio": 0.9}}))
    results.write(RAW, path)
    merged = json.loads(path.read_text())
    assert merged["embedding_throughput"] == {"ratio": 0.9}
    assert "gpu_decoder_engine_vs_generate" in merged


def test_what_a_device_call_carries_stays_under_64_mib() -> None:
    """Tracked files leave room for .gpu/ (47.4 MiB) and .whl/ (4.0 MiB) as built on 2026-12-04."""
    assert wheels.tree_mib()["tracked"] < wheels.LIMIT_MIB - 47.4 - 4.0 - 2.0


def test_sampler_counts_the_children_of_a_process_and_no_gpu_here() -> None:
    """With FRONTENDS=N the supervisor idles and its children work: their CPU must count."""
    import time

    from tests.gpu.gpuinfo import GpuSampler

    spin = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    parent = subprocess.Popen([sys.executable, "-c", spin])
    try:
        with GpuSampler(parent.pid, period_s=0.1) as sampler:
            deadline = time.monotonic() + 20
            while len([c for c in sampler.cpu if c > 0]) < 8 and time.monotonic() < deadline:
                threading.Event().wait(0.1)
        summary = sampler.summary()
    finally:
        import psutil

        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert summary["process_tree_cpu_percent_median"] > 20
    if sampler.source == "none":  # no NVML, no nvidia-smi: nothing reported, not zeros
        assert "gpu_util_percent_median" not in summary and summary["gpu_samples"] == 0
