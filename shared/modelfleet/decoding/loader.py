"""Loading a causal LM: the packaged GGUF (converted once), a local directory or a hub id.

transformers dequantises a GGUF file on every load (15-20 s for SmolLM2-135M). The first start
converts it to an ordinary model directory (safetensors, tokenizer, generation config) under
``CACHE_DIR/<gguf stem>-<fingerprint>``; later starts load that in well under a second. The
directory is written under a temporary name and renamed into place, so replicas that start
together on a shared volume never see a half-written model.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.decoding.int8 import quantize_linears
from modelfleet.devices import pick_device, torch_dtype
from modelfleet.errors import FleetError
from modelfleet.resolve import ModelSource, weights_fingerprint

log = logging.getLogger("modelfleet.decoding.loader")

_CONVERTED_MARKER = "modelfleet-converted.json"


@dataclass(slots=True)
class LoadedModel:
    """A causal LM ready for the engine."""

    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    context_window: int
    eos_token_ids: frozenset[int]
    revision: str
    quantized: bool


def gguf_cache_dir(gguf: Path, cache_dir: Path) -> Path:
    """Where the converted copy of ``gguf`` lives (keyed by the file's fingerprint)."""
    return cache_dir.expanduser() / f"{gguf.stem}-{_file_fingerprint(gguf)}"


def _file_fingerprint(path: Path, sample: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(sample))
        fh.seek(max(0, path.stat().st_size - sample))
        h.update(fh.read(sample))
    return h.hexdigest()[:16]


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """Dequantise ``gguf`` into a model directory once; return that directory."""
    target = gguf_cache_dir(gguf, cache_dir)
    if (target / _CONVERTED_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Processes on one host (llm and generation starting together) convert once: the second
    # waits for the lock and finds the result. The rename below keeps hosts sharing a volume
    # without working locks safe too.
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _CONVERTED_MARKER).exists():
            return target
        _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.info("converting GGUF to a model directory (once)", extra={"gguf": str(gguf)})
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are plain tensors after dequantisation; only the bookkeeping still says GGUF,
    # and save_pretrained refuses to write a "quantized" model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(f'{{"source": "{gguf.name}"}}\n')
        try:
            os.rename(tmp, target)
        except OSError:
            # Another replica won the race; its copy is identical.
            if not (target / _CONVERTED_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "GGUF converted",
        extra={"dir": str(target), "seconds": round(time.perf_counter() - t0, 1)},
    )


def load_causal_lm(
    source: ModelSource,
    *,
    cache_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    context_window: int = 0,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load tokenizer and model for inference; convert a GGUF file first if that is the source."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = source.location
    revision = source.revision
    kwargs: dict[str, Any] = {}
    if source.local:
        path = source.path
        if path.suffix == ".gguf":
            path = convert_gguf(path, cache_dir)
        location = str(path)
        kwargs["local_files_only"] = True
    elif revision:
        kwargs["revision"] = revision
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    if quantize == "int8" and dev != "cpu":
        raise FleetError("QUANTIZE=int8 is a CPU option; on a GPU use DTYPE=bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=dt, **kwargs)
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    if quantize == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_linears(model)
    window = context_window or _model_window(model.config, tokenizer)
    if source.local and not revision:
        revision = "sha256:" + weights_fingerprint(Path(location))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dt if quantize == "none" else torch.int8,
        context_window=window,
        eos_token_ids=_eos_ids(model, tokenizer),
        revision=revision or "unknown",
        quantized=quantize == "int8",
    )


def _model_window(config: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return int(limit) if 0 < limit < 1_000_000 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (
        getattr(model.generation_config, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        tokenizer.eos_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)
