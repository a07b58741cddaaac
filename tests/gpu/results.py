"""bench-results.json entries from a GPU run's raw results, and merging them.

Each entry is the shape ``make bench`` writes (figures, ``target``, ``met``) plus what it ran
on: ``gpu``, ``driver``, ``cuda``, ``torch``, ``transformers``, ``date``, ``device``. Keys start
with ``gpu_`` (``cpu_dryrun_`` for a ``--device cpu`` run), so they never overwrite the CPU
benchmarks' entries. A target whose figure was not reached by the run is left out, not faked.

``python -m tests.gpu.results merge FILE`` merges a run's entries (the ``bench-results.json``
it wrote under its ``--out``, e.g. fetched back from a device call) into the repository's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.perf.common import RESULTS, merge_results

RUN_FIELDS = ("gpu", "driver", "cuda", "torch", "transformers", "date", "device")


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _met(value: float | None, ok: bool) -> bool | None:
    return None if value is None else ok


def entries(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The bench-results.json entries that ``data`` (gpu-results.json) has figures for."""
    ident = _get(data, "env", "identity") or {}
    run = {k: ident.get(k) for k in RUN_FIELDS}
    prefix = "gpu_" if run.get("device") == "cuda" else "cpu_dryrun_"
    out: dict[str, dict[str, Any]] = {}

    dec = data.get("decoder_throughput") or {}
    if "ratio_engine_over_generate" in dec:
        ratio = dec["ratio_engine_over_generate"]
        out["decoder_engine_vs_generate"] = {
            "engine_tokens_per_s": dec["engine_median"],
            "hf_static_generate_tokens_per_s": dec["generate_median"],
            "requests": dec["prompts"], "new_tokens": dec["new_tokens"], "ratio": ratio,
            "target": ">= 2.0x static generate", "met": ratio >= 2.0}  # fmt: skip
    inv = data.get("decoder_invariance") or {}
    if "pass" in inv:
        out["decoder_batch_invariance"] = {"bitwise_equal_logits": inv["pass"],
                                           "target": "pass", "met": bool(inv["pass"])}  # fmt: skip

    load = _get(data, "llm_service", "load_16_streams") or {}
    p50 = load.get("ttft_p50_ms")
    if p50 is not None:
        out["llm_ttft_16_streams"] = {
            "ttft_p50_ms": p50, "ttft_p95_ms": load.get("ttft_p95_ms"),
            "service_tokens_per_s": load.get("tokens_per_s"), "requests": load.get("requests"),
            "failed": load.get("failed"), "max_tokens": load.get("max_tokens"),
            "target": "p50 <= 200 ms", "met": p50 <= 200}  # fmt: skip
        static = dec.get("generate_median")
        if static and load.get("tokens_per_s"):
            out["llm_service_vs_generate"] = {
                "service_tokens_per_s": load["tokens_per_s"],
                "hf_static_generate_tokens_per_s": static,
                "ratio": round(load["tokens_per_s"] / static, 3), "target": "report"}  # fmt: skip
    if load:
        util = load.get("gpu_util_percent_median")
        out["gpu_utilisation_saturation"] = {
            "load": f"llm service, {load.get('concurrency')} streams x "
            f"{load.get('max_tokens')} tokens (every batch slot busy)",
            "util_percent_median": util, "util_percent_p90": load.get("gpu_util_percent_p90"),
            "memory_used_mib_max": load.get("gpu_memory_used_mib_max"),
            "power_w_median": load.get("gpu_power_w_median"),
            "sampler": load.get("gpu_sampler"), "samples": load.get("gpu_samples"),
            "target": ">= 80 %", "met": _met(util, util is not None and util >= 80)}  # fmt: skip

    for key, name in (("embedding_throughput", "embedding_service_vs_inprocess"),
                      ("embedding_throughput_frontends4",
                       "embedding_service_vs_inprocess_frontends4")):  # fmt: skip
        summ = _get(data, key, "summary")
        if summ:
            ratio = summ["ratio_service_over_inprocess"]
            out[name] = {**summ, "frontends": _get(data, key, "frontends"),
                         "clients": 64, "target": ">= 0.5 of in-process at its best batch",
                         "met": ratio >= 0.5}  # fmt: skip
    rates = _get(data, "vllm", "tokens_per_s")
    if rates:
        best = sorted(rates)[len(rates) // 2]
        engine = dec.get("engine_median")
        out["vllm_16x64"] = {"vllm": _get(data, "vllm", "vllm"), "tokens_per_s": best,
                             "engine_over_vllm": round(engine / best, 3) if engine else None,
                             "target": "report"}  # fmt: skip
    return {prefix + k.removeprefix("gpu_"): {**v, **run} for k, v in out.items()}


def write(data: dict[str, Any], path: Path) -> None:
    """Merge this run's entries into ``path`` (called after every section)."""
    found = entries(data)
    if found:
        merge_results(found, path)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "merge":
        print("usage: python -m tests.gpu.results merge BENCH_RESULTS_JSON", file=sys.stderr)
        return 2
    found = json.loads(Path(argv[1]).read_text())
    merge_results(found)
    print(f"merged {len(found)} entries into {RESULTS}: {', '.join(sorted(found))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
