"""Build, on a CPU machine, what ``make bench-gpu`` carries to a GPU machine (into .gpu/).

- ``.gpu/minilm-fp16/``: the packaged all-MiniLM-L6-v2 with its weights cast to fp16 (45 MB
  instead of 91 MB, so it fits the 64 MiB a device call may carry);
- ``.gpu/embedding-ref.json``: fp32 CPU embeddings of a few sentences from the original weights,
  and how far the fp16 weights alone move them (both run in fp32 on the CPU);
- ``.gpu/smollm2-shape/``: SmolLM2-135M-Instruct's config, tokenizer and chat template, no
  weights: tests/gpu/sec_decoder.py initialises random weights from a seed on the GPU machine
  (a 135M checkpoint does not fit the carry limit).

Run: ``python -m tests.gpu.prepare_assets`` (needs the packaged models; converts the GGUF once).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modelfleet.decoding.loader import convert_gguf
from modelfleet.decoding.settings import DecoderSettings
from modelfleet.resolve import packaged_embedding_dir, packaged_llm_gguf

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".gpu"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Kubernetes autoscaling reacts to CPU load and custom metrics.",
    "I loved the film, but the ending felt rushed and unearned.",
    "Can you book a table for four people at eight tonight?",
    "My order arrived damaged and I would like a refund.",
    "Solar panels convert sunlight directly into electricity.",
    "word " * 300,  # over MiniLM's 256-token limit: truncated
]

MINILM_FILES = [
    "1_Pooling",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
]
LLM_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
]


def minilm() -> None:
    from sentence_transformers import SentenceTransformer

    src = packaged_embedding_dir()
    dst = OUT / "minilm-fp16"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in MINILM_FILES:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, dst / name)
        else:
            shutil.copy2(p, dst / name)
    weights = load_file(str(src / "model.safetensors"))
    half_weights = {k: v.half().contiguous() for k, v in weights.items()}
    save_file(half_weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    ref = SentenceTransformer(str(src), device="cpu")
    emb = ref.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    half = SentenceTransformer(str(dst), device="cpu", model_kwargs={"dtype": torch.float32})
    emb16 = half.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    cos = (emb * emb16).sum(axis=1)
    (OUT / "embedding-ref.json").write_text(
        json.dumps(
            {
                "sentences": SENTENCES,
                "embeddings_fp32_cpu": np.asarray(emb, dtype=np.float32).tolist(),
                "fp16_weights_cpu_fp32_cosine_min": float(cos.min()),
            }
        )
    )
    print("minilm fp16:", dst, "weight rounding alone: min cosine", float(cos.min()))


def smollm2_shape() -> None:
    src = convert_gguf(packaged_llm_gguf(), DecoderSettings().cache_dir)
    dst = OUT / "smollm2-shape"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in LLM_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    print("smollm2 shape:", dst)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    minilm()
    smollm2_shape()
