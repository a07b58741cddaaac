"""Runtime flavours of one sequence classifier: float, PyTorch int8, ONNX Runtime (float, int8).

A model directory (``save_pretrained`` + tokenizer) holds the float weights at its root; the
toolkit's ``modelfleet export`` adds the other flavours under ``flavours/<name>/`` and records
each one's measured quality and speed in ``model_card.json`` (``flavours`` section). This module
only *runs* them, so the services can serve any flavour without importing the toolkit.

Every runner maps tokenised, padded inputs (numpy int64) to logits (numpy float32).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modelfleet.errors import FleetError

log = logging.getLogger("modelfleet.flavours")

FLOAT = "float"
TORCH_INT8 = "torch-int8"
ONNX = "onnx"
ONNX_INT8_DYNAMIC = "onnx-int8-dynamic"
ONNX_INT8_STATIC = "onnx-int8-static"
FLAVOURS = (FLOAT, TORCH_INT8, ONNX, ONNX_INT8_DYNAMIC, ONNX_INT8_STATIC)
ONNX_FLAVOURS = (ONNX, ONNX_INT8_DYNAMIC, ONNX_INT8_STATIC)
ONNX_FILE = "model.onnx"

Feats = dict[str, npt.NDArray[np.int64]]


class FlavourUnavailable(FleetError):
    """The model directory has no artifact of the requested flavour."""


class Runner(Protocol):
    flavour: str

    def logits(self, feats: Feats) -> npt.NDArray[np.float32]: ...


def flavour_dir(model_dir: Path, flavour: str) -> Path:
    return model_dir if flavour == FLOAT else model_dir / "flavours" / flavour


def model_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model_card.json"
    if not path.exists():
        return {}
    card: dict[str, Any] = json.loads(path.read_text())
    return card


def available(model_dir: Path) -> list[str]:
    """The flavours whose artifact exists in ``model_dir`` (float always, if it loads at all)."""
    found = [FLOAT]
    if (flavour_dir(model_dir, TORCH_INT8) / "flavour.json").exists():
        found.append(TORCH_INT8)
    found += [f for f in ONNX_FLAVOURS if (flavour_dir(model_dir, f) / ONNX_FILE).exists()]
    return found


class TorchRunner:
    def __init__(self, model: Any, flavour: str, device: str) -> None:
        self.model = model
        self.flavour = flavour
        self.device = device

    def logits(self, feats: Feats) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in feats.items()}
            out = self.model(**inputs).logits.float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)


class OnnxRunner:
    def __init__(self, path: Path, flavour: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.flavour = flavour

    def logits(self, feats: Feats) -> npt.NDArray[np.float32]:
        out = self.session.run(None, {k: feats[k] for k in self.inputs if k in feats})
        return np.asarray(out[0], dtype=np.float32)


def load_torch(
    model_dir: Path, dtype: Any = None, device: str = "cpu", trust_remote_code: bool = False
) -> Any:
    from transformers import AutoModelForSequenceClassification

    kw: dict[str, Any] = {"local_files_only": True}
    if trust_remote_code:
        kw["trust_remote_code"] = True
    if dtype is not None:
        kw["dtype"] = dtype
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kw).to(device)
    model.eval()
    return model


def quantize_torch_int8(model: Any) -> Any:
    """PyTorch dynamic int8 quantisation of every Linear layer: per-channel int8 weights,
    activations quantised per batch at run time. Deterministic, so the artifact is the recipe.

    Per-channel because per-tensor scales (the default qconfig) cost this MiniLM classifier
    1.7 points of label agreement on the intent held-out set."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # torch 2.13 deprecates its quantized tensor types (torchao is the successor, not installed
    # here); they still work, and the warning would fire once per layer at every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qconfig = {torch.nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(model, qconfig)  # type: ignore[no-untyped-call]


def load_runner(
    model_dir: Path,
    flavour: str,
    *,
    device: str = "cpu",
    dtype: Any = None,
    threads: int = 0,
    trust_remote_code: bool = False,
) -> Runner:
    """A runner for one flavour of the model in ``model_dir``."""
    if flavour not in FLAVOURS:
        raise FlavourUnavailable(f"unknown flavour {flavour!r}; one of {', '.join(FLAVOURS)}")
    if flavour not in available(model_dir):
        raise FlavourUnavailable(
            f"{model_dir} has no {flavour!r} artifact (has: {', '.join(available(model_dir))}); "
            "`modelfleet export` makes it"
        )
    if flavour in ONNX_FLAVOURS:
        if device != "cpu":
            raise FlavourUnavailable(f"flavour {flavour!r} runs on the CPU only, not {device}")
        return OnnxRunner(flavour_dir(model_dir, flavour) / ONNX_FILE, flavour, threads)
    if flavour == TORCH_INT8:
        if device != "cpu":
            raise FlavourUnavailable("flavour 'torch-int8' runs on the CPU only")
        model = load_torch(model_dir, trust_remote_code=trust_remote_code)
        return TorchRunner(quantize_torch_int8(model), flavour, device)
    return TorchRunner(load_torch(model_dir, dtype, device, trust_remote_code), flavour, device)


def eligible(card: dict[str, Any], have: list[str]) -> list[str]:
    """Flavours present in the directory whose recorded quality is within the card's budget.

    Float is the reference and always eligible; a flavour the card never measured is not.
    """
    measured = card.get("flavours") or {}
    ok = [FLOAT]
    for name in have:
        if name != FLOAT and (measured.get(name) or {}).get("within_budget") is True:
            ok.append(name)
    return ok


def time_runner(runner: Runner, feats: Feats, repeats: int = 3) -> float:
    """Median seconds of one forward pass on ``feats`` (after one untimed warm-up pass)."""
    runner.logits(feats)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.logits(feats)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def pick_fastest(
    model_dir: Path,
    candidates: list[str],
    feats: Feats,
    *,
    threads: int = 0,
    trust_remote_code: bool = False,
) -> tuple[Runner, dict[str, float]]:
    """Load each candidate, time it on ``feats`` here, and keep the fastest (``auto``)."""
    timings: dict[str, float] = {}
    best: tuple[float, Runner] | None = None
    for name in candidates:
        runner = load_runner(model_dir, name, threads=threads, trust_remote_code=trust_remote_code)
        t = time_runner(runner, feats)
        timings[name] = t
        if best is None or t < best[0]:
            best = (t, runner)
    assert best is not None  # candidates always hold float
    log.info("flavour timings", extra={"timings_ms": {k: v * 1e3 for k, v in timings.items()}})
    return best[1], timings
