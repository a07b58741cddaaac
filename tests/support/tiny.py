"""A tiny encoder for tests of the machinery around training, where model quality is moot."""

from __future__ import annotations

from pathlib import Path


def build_tiny_encoder(out: Path) -> Path:
    """A 2-layer, 32-wide BERT with the packaged MiniLM's tokenizer, saved as a model directory:
    the same code path as MiniLM at a fraction of the cost per step."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from modelfleet.resolve import packaged_embedding_dir

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_embedding_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
