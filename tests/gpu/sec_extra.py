"""The vLLM row (where vllm is importable) and the engine checks (tests/gpu/engine_checks.py).

vLLM is not in the device image (KINDS.md's package list) and its wheels are far over the
64 MiB a call may carry, so the row is skipped there today; it runs, in a subprocess so its
worker processes and CUDA state die with it, wherever vllm is installed.

The engine checks run in-process on the run's device, on the prepared checkpoint when
``build_llm`` made one and on the packaged model otherwise (so the CPU dry run needs no assets).

Run as ``python -m tests.gpu.sec_extra vllm LLM_DIR NEW_TOKENS OUT_JSON`` (the subprocess).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.gpu.harness import ROOT, Ctx


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def section_engine_checks(res: dict[str, Any], ctx: Ctx) -> None:
    from tests.gpu import engine_checks

    engine_checks.run(res, ctx.device, ctx.shared.get("llm_dir"))


def section_vllm(res: dict[str, Any], ctx: Ctx, limit_s: float) -> None:
    """vLLM's offline ``LLM.chat`` on the same 16 prompts x 64 tokens, in a subprocess."""
    out = Path(ctx.args.out) / "vllm-row.json"
    new = 16 if ctx.quick else 64
    cmd = [sys.executable, "-m", "tests.gpu.sec_extra", "vllm", str(ctx.shared["llm_dir"]),
           str(new), str(out)]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=max(10.0, limit_s - 5))  # fmt: skip
    res["returncode"] = r.returncode
    res["log_tail"] = (r.stdout + r.stderr)[-2000:]
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"vllm run failed (rc {r.returncode})")
    res.update(json.loads(out.read_text()))


def _vllm_main(llm_dir: str, new: int, out: str) -> None:
    import vllm

    from tests.perf.common import PROMPTS

    t = time.perf_counter()
    llm = vllm.LLM(model=llm_dir, dtype="bfloat16", max_model_len=2048,
                   gpu_memory_utilization=0.3, seed=0)  # fmt: skip
    load_s = time.perf_counter() - t
    params = vllm.SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    llm.chat(convs, params, use_tqdm=False)  # warm-up
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        outs = llm.chat(convs, params, use_tqdm=False)
        el = time.perf_counter() - t
        rates.append(round(sum(len(o.outputs[0].token_ids) for o in outs) / el, 1))
    Path(out).write_text(json.dumps({"vllm": vllm.__version__, "load_s": round(load_s, 1),
                                     "tokens_per_s": rates, "prompts": len(PROMPTS),
                                     "new_tokens": new}))  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["vllm"]:
        _vllm_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
