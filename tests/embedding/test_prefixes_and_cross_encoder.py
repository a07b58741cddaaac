# ruff: noqa: RUF001 - Chinese text uses fullwidth punctuation
"""Instruction prefixes (``input_type``) and a configured cross-encoder on a real embedding
service. The cross-encoder is a tiny random BERT built here from the packaged model's tokenizer:
no download, so its scores are meaningless, but they must be exactly what sentence-transformers'
own ``CrossEncoder.predict`` gives for the same pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelfleet.resolve import packaged_embedding_dir
from tests.support.procs import Proc, start_service

QUERY_PREFIX = "为这个句子生成表示以用于检索相关文章："
DOC_PREFIX = "passage: "


def build_cross_encoder(target: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(packaged_embedding_dir(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, num_labels=1,
                     max_position_embeddings=128)  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(target)
    tok.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


@pytest.fixture(scope="module")
def proc(cross_dir: Path) -> Iterator[Proc]:
    env = {"QUERY_PREFIX": QUERY_PREFIX, "DOCUMENT_PREFIX": DOC_PREFIX,
           "RERANK_MODEL": str(cross_dir), "MAX_RERANK_DOCUMENTS": "8"}  # fmt: skip
    p = start_service("embedding", env, timeout=300)
    yield p
    p.stop()


def embed(proc: Proc, **body: Any) -> list[float]:
    r = httpx.post(proc.url + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"][0]["embedding"]  # type: ignore[no-any-return]


def test_input_type_puts_the_configured_prefix_before_the_text(proc: Proc) -> None:
    text = "猫在哪里？"
    assert embed(proc, input=text, input_type="query") == embed(proc, input=QUERY_PREFIX + text)
    for kind in ("document", "passage", "search_document"):
        assert embed(proc, input=text, input_type=kind) == embed(proc, input=DOC_PREFIX + text)
    assert embed(proc, input=text) != embed(proc, input=text, input_type="query")
    # Token ids are taken as given: no prefix.
    ids = httpx.post(proc.url + "/tokenize", json={"prompt": text}).json()["tokens"]
    assert embed(proc, input=ids, input_type="query") == embed(proc, input=text)


def test_model_cards_name_the_prefixes_and_the_cross_encoder(proc: Proc) -> None:
    cards = httpx.get(proc.url + "/v1/models").json()["data"]
    assert [c["id"] for c in cards] == ["sentence-transformers/all-MiniLM-L6-v2",
                                        "tiny-cross-encoder"]  # fmt: skip
    assert "+prefix:" in cards[0]["revision"]  # the gateway's cache key changes with them
    assert cards[0]["prefixes"] == {"query": QUERY_PREFIX, "document": DOC_PREFIX}
    assert cards[1]["kind"] == "cross-encoder"
    one = httpx.get(proc.url + "/v1/models/tiny-cross-encoder").json()
    assert one["id"] == "tiny-cross-encoder"


def test_rerank_scores_come_from_the_cross_encoder(proc: Proc, cross_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    query, docs = "猫在哪里睡觉？", ["猫在沙发上睡觉", "股市今天大幅下跌", "the cat sleeps"]
    out = httpx.post(proc.url + "/v1/rerank", json={"query": query, "documents": docs},
                     timeout=30).json()  # fmt: skip
    assert out["model"] == "tiny-cross-encoder"
    expected = CrossEncoder(str(cross_dir), device="cpu").predict([(query, d) for d in docs])
    got = {r["index"]: r["relevance_score"] for r in out["results"]}
    np.testing.assert_allclose([got[i] for i in range(3)], expected, atol=1e-5)
    assert [r["index"] for r in out["results"]] == list(np.argsort(-expected, kind="stable"))
    assert out["usage"]["prompt_tokens"] > 0


def test_rerank_document_limit_is_the_setting(proc: Proc) -> None:
    r = httpx.post(proc.url + "/v1/rerank", json={"query": "q", "documents": ["a"] * 9})
    assert r.status_code == 400 and r.json()["error"]["message"] == "too many documents: 9 > 8"


def test_tokenize_by_model_picks_the_cross_encoder_s_tokenizer(proc: Proc) -> None:
    r = httpx.post(proc.url + "/tokenize", json={"prompt": "猫", "model": "tiny-cross-encoder"})
    assert r.status_code == 200 and r.json()["max_model_len"] == 128
