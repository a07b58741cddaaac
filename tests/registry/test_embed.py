"""``modelfleet embed``: a short MultipleNegativesRankingLoss fine-tune on pairs, with held-out
retrieval and similarity figures, registered for the embedding service."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from modelfleet_toolkit import registry
from tests.registry.conftest import cli
from tests.support.trained import held_out, intent_examples


def same_label_pairs(texts: list[str], labels: list[str], seed: int) -> list[tuple[str, str]]:
    """Each text paired with another text of its label: paraphrase-like pairs of one intent."""
    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    for t, lbl in zip(texts, labels, strict=True):
        by.setdefault(lbl, []).append(t)
    pairs = []
    for group in by.values():
        rng.shuffle(group)
        pairs += [(group[i], group[i + 1]) for i in range(0, len(group) - 1, 2)]
    return pairs


def write(path: Path, pairs: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive"])
        w.writerows(pairs)
    return path


@pytest.mark.slow
def test_embed_fine_tune_register(store: str, tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", same_label_pairs(*intent_examples(), seed=0))
    test = write(tmp_path / "test.csv", same_label_pairs(*held_out(), seed=1))
    out = cli("embed", "--data", str(train), "--held-out", str(test), "--output-dir",
              str(tmp_path / "emb"), "--epochs", "1", "--register", "intent-emb", "--json",
              uri=store, timeout=1800)  # fmt: skip
    res = json.loads(out.stdout)
    for phase in ("before", "after"):
        assert set(res[phase]) == {"recall@1", "recall@5", "mrr@10", "spearman_cosine"}
        assert all(0 <= v <= 1 for k, v in res[phase].items() if k != "spearman_cosine")
    # pairs of one intent pull together: the held-out same-intent similarity rises
    assert res["after"]["spearman_cosine"] > res["before"]["spearman_cosine"]
    assert res["registered"] == {"name": "intent-emb", "version": "1"}
    assert registry.show("intent-emb")["versions"][0]["metrics"] == res["after"]
