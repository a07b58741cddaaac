"""Fine-tune a sentence-transformers embedding model on pairs or triplets, and measure it.

Training is sentence-transformers' own ``SentenceTransformerTrainer`` with
``MultipleNegativesRankingLoss`` (in-batch negatives; a ``negative`` column adds hard negatives,
i.e. triplets). Evaluation on held-out pairs uses its evaluators: retrieval
(``InformationRetrievalEvaluator``: each anchor searches all held-out positives; recall@k, MRR@10)
and similarity correlation (``EmbeddingSimilarityEvaluator``: Spearman of the cosine against a
``score`` column, or against 1 for a true pair and 0 for a mismatched one when there is none).
The output is a ``SentenceTransformer.save`` directory with a ``model_card.json``, which
``modelfleet registry register`` and the embedding service's ``models:/`` setting take as is.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PairRows = list[dict[str, str]]


@dataclass
class EmbedResult:
    output_dir: Path
    before: dict[str, float]
    after: dict[str, float]


def load_pairs(path: str | Path) -> PairRows:
    """Rows with ``anchor`` and ``positive`` (optional ``negative``, ``score``) from CSV/JSONL."""
    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".csv":
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows or not {"anchor", "positive"} <= set(rows[0]):
        raise ValueError(f"{p}: needs columns 'anchor' and 'positive' (and optionally 'negative')")
    return [{k: str(v) for k, v in r.items() if v is not None} for r in rows]


def evaluate(model: Any, pairs: PairRows, seed: int = 0) -> dict[str, float]:
    """Retrieval (recall@1/5, MRR@10) and Spearman similarity correlation on held-out pairs."""
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
    )

    queries: dict[str, Any] = {f"q{i}": r["anchor"] for i, r in enumerate(pairs)}
    corpus: dict[str, Any] = {}
    relevant: dict[str, set[str]] = {}
    doc_ids: dict[str, str] = {}
    for i, r in enumerate(pairs):
        did = doc_ids.setdefault(r["positive"], f"d{len(doc_ids)}")
        corpus[did] = r["positive"]
        relevant[f"q{i}"] = {did}
    ir = InformationRetrievalEvaluator(
        queries, corpus, relevant, accuracy_at_k=[1, 5], precision_recall_at_k=[1, 5],
        mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[10], write_csv=False, name="held-out",
    )  # fmt: skip
    ir_scores = ir(model)
    if all("score" in r for r in pairs):
        s1, s2 = [r["anchor"] for r in pairs], [r["positive"] for r in pairs]
        gold = [float(r["score"]) for r in pairs]
    else:  # true pairs (1) against the same anchors with a shuffled positive (0)
        rng = random.Random(seed)
        shuffled = [r["positive"] for r in pairs]
        rng.shuffle(shuffled)
        s1 = [r["anchor"] for r in pairs] * 2
        s2 = [r["positive"] for r in pairs] + shuffled
        gold = [1.0] * len(pairs) + [0.0] * len(pairs)
    sim = EmbeddingSimilarityEvaluator(s1, s2, gold, write_csv=False, name="held-out")(model)

    def pick(scores: dict[str, float], suffix: str) -> float:
        return float(next(v for k, v in scores.items() if k.endswith(suffix)))

    return {
        "recall@1": pick(ir_scores, "cosine_recall@1"),
        "recall@5": pick(ir_scores, "cosine_recall@5"),
        "mrr@10": pick(ir_scores, "cosine_mrr@10"),
        "spearman_cosine": pick(sim, "spearman_cosine"),
    }


def fine_tune(
    train_pairs: PairRows,
    held_out: PairRows,
    output_dir: Path,
    *,
    base: str | None = None,
    epochs: float = 1.0,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 42,
) -> EmbedResult:
    """MultipleNegativesRankingLoss fine-tuning; held-out figures before and after."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from modelfleet.resolve import packaged_embedding_dir

    base = base or str(packaged_embedding_dir())
    model = SentenceTransformer(base, device="cpu", local_files_only=True)
    before = evaluate(model, held_out)
    cols = ["anchor", "positive"] + (["negative"] if "negative" in train_pairs[0] else [])
    ds = datasets.Dataset.from_dict({c: [r[c] for r in train_pairs] for c in cols})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"), num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    after = evaluate(model, held_out)
    model.save(str(output_dir))
    card = {
        "task": "embedding",
        "base_model": base,
        "loss": "MultipleNegativesRankingLoss",
        "data": {"rows": len(train_pairs), "columns": cols},
        "metrics": after,
        "metrics_before": before,
    }
    (output_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    return EmbedResult(output_dir, before, after)
