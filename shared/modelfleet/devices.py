"""Device and dtype choice: CUDA -> bf16 (fp16 where bf16 is unsupported), CPU -> fp32."""

from __future__ import annotations

import os
from typing import Any

# MKL's strict conditional-numerical-reproducibility mode: every GEMM reduces over K in one
# fixed order, whatever the thread count and the number of rows. Without it MKL splits K across
# threads for some shapes and row counts (seen on AVX-512/AMX Xeons: a [M, 1536] x [1536, 576]
# product with 2 threads rounds row 0 differently for M in 57..192), so a sequence's logits
# would depend on what else is in its batch. Measured cost: none beyond noise.
MKL_REPRODUCIBLE = "AUTO,STRICT"


def reproducible_cpu_math() -> None:
    """Ask MKL for batch-size-independent GEMM results (unless MKL_CBWR is set already).

    MKL reads ``MKL_CBWR`` once, at its first call: run this before any tensor math, which is
    why every service's ``main()`` starts with it.
    """
    os.environ.setdefault("MKL_CBWR", MKL_REPRODUCIBLE)


def cpu_math_is_reproducible() -> bool:
    return "STRICT" in os.environ.get("MKL_CBWR", "").upper()


def pick_device(setting: str) -> str:
    import torch

    if setting != "auto":
        if setting == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("DEVICE=cuda but no CUDA device is visible")
        return setting
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def torch_dtype(setting: str, device: str) -> Any:
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
