"""The packed encoder gives the model's own embeddings, with no padding in the dense layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelfleet.encoder import SentenceEncoder
from modelfleet.packed import packed_encoder
from modelfleet.resolve import packaged_embedding_dir, resolve_encoder

MIXED = [
    "hi",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email account at all?",
    "Ünïcödé, emoji 🚀 and CJK 漢字 all tokenise.",
    "word " * 400,  # over the 256-token limit: truncated like the model's own tokeniser does
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    enc = SentenceEncoder(resolve_encoder("", None), device="cpu", dtype="float32")
    enc.load()
    return enc


def test_packed_matches_sentence_transformers(encoder: SentenceEncoder) -> None:
    assert encoder.packed is not None
    got = encoder.encode(MIXED)
    want = encoder.model.encode(MIXED, batch_size=len(MIXED), normalize_embeddings=True)
    np.testing.assert_allclose(got.embeddings, want, atol=1e-5)
    assert got.truncated == [False, False, False, False, True]
    assert got.tokens[-1] == encoder.max_tokens


def test_each_text_is_independent_of_its_batch(encoder: SentenceEncoder) -> None:
    alone = np.stack([encoder.encode([t]).embeddings[0] for t in MIXED])
    np.testing.assert_allclose(encoder.encode(MIXED).embeddings, alone, atol=1e-5)


def test_tokenize_matches_the_models_own_truncation(encoder: SentenceEncoder) -> None:
    ids, counts = encoder.tokenize(MIXED)
    own = encoder.model.tokenize(MIXED)
    for i, row in enumerate(ids):
        n = int(own["attention_mask"][i].sum())
        assert row == own["input_ids"][i][:n].tolist()
    assert counts[-1] > encoder.max_tokens
    assert counts[:-1] == [len(r) for r in ids[:-1]]


def test_cls_pooling_matches() -> None:
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(packaged_embedding_dir()))
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
    model: Any = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    packed = packed_encoder(model)
    assert packed is not None and packed.pooling == "cls"
    ids = [model.tokenizer(t)["input_ids"] for t in MIXED[:4]]
    want = model.encode(MIXED[:4], normalize_embeddings=True)
    np.testing.assert_allclose(packed.encode(ids), want, atol=1e-5)


def test_unsupported_pipelines_fall_back() -> None:
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(packaged_embedding_dir()))
    dim = word.get_embedding_dimension()
    dense = models.Dense(dim, 8)
    model = SentenceTransformer(modules=[word, models.Pooling(dim), dense], device="cpu")
    assert packed_encoder(model) is None
    maxpool = SentenceTransformer(
        modules=[word, models.Pooling(dim, pooling_mode="max")], device="cpu"
    )
    assert packed_encoder(maxpool) is None


def test_padded_path_when_disabled() -> None:
    enc = SentenceEncoder(resolve_encoder("", None), device="cpu", packed=False)
    enc.load()
    assert enc.packed is None
    out = enc.encode(MIXED)
    assert out.embeddings.shape == (len(MIXED), enc.dimensions)
    assert out.truncated[-1]


def test_half_precision_stays_close_to_fp32(encoder: SentenceEncoder) -> None:
    # bf16 is what a GPU runs; pooling and normalisation stay in fp32 (long inputs included).
    half = SentenceEncoder(resolve_encoder("", None), device="cpu", dtype="bfloat16")
    half.load()
    cos = (half.encode(MIXED).embeddings * encoder.encode(MIXED).embeddings).sum(axis=1)
    assert cos.min() > 0.999, cos
