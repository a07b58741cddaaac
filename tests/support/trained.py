"""A small, real fine-tuned classifier for the registry tests, cached under ``.run/``.

The packaged MiniLM gets a sequence-classification head and a short Trainer run on the intent
examples shipped with the classification service; the held-out set is the shipped
``modelfleet_toolkit/datasets/intent/test.csv`` (what ``make eval`` scores). The result is a
model directory (``save_pretrained`` weights + tokenizer, ``model_card.json``, ``metrics.json``)
so export,
registry and serving tests start from what ``modelfleet train`` writes. Cached by a hash of the
recipe, so only the first test session pays the ~30 s of training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tests.support.procs import ROOT

INTENT_TASK = ROOT / "services" / "classification" / "tasks" / "intent.json"
INTENT_HELD_OUT = ROOT / "shared" / "modelfleet_toolkit" / "datasets" / "intent" / "test.csv"
CACHE = ROOT / ".run" / "test-models"


def intent_examples() -> tuple[list[str], list[str]]:
    data = json.loads(INTENT_TASK.read_text())
    texts, labels = [], []
    for label, examples in data["examples"].items():
        for t in examples:
            texts.append(str(t))
            labels.append(str(label))
    return texts, labels


def held_out() -> tuple[list[str], list[str]]:
    from modelfleet_toolkit import datasets

    return datasets.read("intent", "test")


def fine_tune(
    out: Path, *, task: str = "intent", epochs: float = 6.0, lr: float = 1e-4, seed: int = 0
) -> Path:
    """Fine-tune the packaged MiniLM on the shipped intent examples into ``out``."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from modelfleet.resolve import packaged_embedding_dir

    base = packaged_embedding_dir()
    texts, labels = intent_examples()
    names = sorted(set(labels))
    label2id = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, local_files_only=True, num_labels=len(names),
        id2label=dict(enumerate(names)), label2id=label2id,
    )  # fmt: skip
    model.config.finetuning_task = task  # the service exposes the task by this name
    enc = tok(texts, truncation=True, max_length=64)
    rows = [
        {"input_ids": ids, "attention_mask": am, "labels": label2id[y]}
        for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"), num_train_epochs=epochs, learning_rate=lr,
        per_device_train_batch_size=16, seed=seed, save_strategy="no", report_to=[],
        logging_strategy="no", use_cpu=True, disable_tqdm=True, warmup_steps=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)
    )
    trainer.train()
    model.eval()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    # held-out figures for the card, with scikit-learn's metrics like the toolkit's evaluate
    from sklearn.metrics import accuracy_score, f1_score

    ht, hl = held_out()
    with torch.inference_mode():
        feats = tok(ht, truncation=True, max_length=128, padding=True, return_tensors="pt")
        pred = [names[int(i)] for i in np.argmax(model(**feats).logits.numpy(), axis=1)]
    metrics = {
        "accuracy": float(accuracy_score(hl, pred)),
        "f1_macro": float(f1_score(hl, pred, average="macro")),
    }
    fingerprint = hashlib.sha256(INTENT_TASK.read_bytes()).hexdigest()[:16]
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    card = {
        "task": task,
        "labels": names,
        "base_model": str(base),
        "data": {"path": str(INTENT_TASK), "fingerprint": fingerprint, "rows": len(texts)},
        "metrics": metrics,
        "train": {"epochs": epochs, "learning_rate": lr, "seed": seed},
    }
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
    (tmp / "train_config.yaml").write_text(f"epochs: {epochs}\nlearning_rate: {lr}\nseed: {seed}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def cached_model(name: str = "intent", **kw: float) -> Path:
    """A fine-tuned model directory, trained once per recipe and reused across sessions."""
    recipe = json.dumps({"name": name, **kw, "v": 1}, sort_keys=True)
    key = hashlib.sha256(recipe.encode() + INTENT_TASK.read_bytes()).hexdigest()[:10]
    out = CACHE / f"{name}-{key}"
    if not (out / "model_card.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fine_tune(out, **kw)  # type: ignore[arg-type]
    return out
