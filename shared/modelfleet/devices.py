"""Device and dtype choice: CUDA -> bf16 (fp16 where bf16 is unsupported), CPU -> fp32."""

from __future__ import annotations

from typing import Any


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
