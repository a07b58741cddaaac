"""``make bench-train``: the toolkit's training throughput against a plain PyTorch loop.

Same model (the packaged MiniLM + a fresh classification head), same data (the intent task's
shipped examples), same batch, max length, optimiser (AdamW, weight decay, clipping at 1.0) and
thread count, run side by side in one process, alternating, best of ``ROUNDS`` for each. The
clock starts after ``WARMUP`` steps (allocator and kernel warm-up) and stops at the last step, so
model loading and tokenisation are outside both figures. Target: toolkit >= 0.95 x plain loop.

    python -m tests.perf.bench_train            # prints JSON, merges into bench-results.json
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tests.perf.common import merge_results
from tests.toolkit.conftest import shipped_rows, write_csv

BATCH = int(os.environ.get("BENCH_TRAIN_BATCH", "16"))
STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "30"))
WARMUP = 3
ROUNDS = int(os.environ.get("BENCH_TRAIN_ROUNDS", "2"))
MAX_LEN = 64
TARGET = 0.95


class _Clock(TrainerCallback):
    """Timestamps of each optimiser step's end."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.ends.append(time.perf_counter())


def _rate(ends: list[float]) -> float:
    timed = ends[WARMUP - 1 :]
    return (len(timed) - 1) * BATCH / (timed[-1] - timed[0])


def toolkit_rate(data: Path, out: Path) -> float:
    from modelfleet_toolkit.config import TrainConfig
    from modelfleet_toolkit.train import train

    clock = _Clock()
    cfg = TrainConfig(
        data=str(data), eval_fraction=0.0, output_dir=str(out), max_steps=STEPS,
        batch_size=BATCH, max_length=MAX_LEN, sampler="random", eval_strategy="no",
        eval_steps=10_000, logging_steps=10, track=False, warmup_ratio=0.1, schedule="linear",
    )  # fmt: skip
    train(cfg, callbacks=[clock], progress=False)
    return _rate(clock.ends)


def plain_rate(data: Path) -> float:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
    )

    from modelfleet.resolve import packaged_embedding_dir
    from modelfleet_toolkit.data import clean, load_examples

    base = str(packaged_embedding_dir())
    ex = clean(load_examples(data))
    labels = sorted(set(ex.labels))
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    enc = tok(ex.texts, truncation=True, max_length=MAX_LEN)
    rows = [
        {"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": labels.index(y)}
        for i, m, t, y in zip(
            enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], ex.labels, strict=True
        )
    ]
    loader = torch.utils.data.DataLoader(
        rows, batch_size=BATCH, shuffle=True, collate_fn=DataCollatorWithPadding(tok)
    )
    decay = [p for n, p in model.named_parameters() if "bias" not in n and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=5e-5,
    )
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * STEPS), STEPS)
    model.train()
    ends: list[float] = []
    while len(ends) < STEPS:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            ends.append(time.perf_counter())
            if len(ends) == STEPS:
                break
    return _rate(ends)


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_csv(Path(tmp) / "intent.csv", shipped_rows("intent", 1000))
        plain, kit = [], []
        for r in range(ROUNDS):
            plain.append(plain_rate(data))
            kit.append(toolkit_rate(data, Path(tmp) / f"kit-{r}"))
    ratio = max(kit) / max(plain)
    return {
        "train_throughput_cpu": {
            "toolkit_samples_per_s": round(max(kit), 1),
            "plain_loop_samples_per_s": round(max(plain), 1),
            "ratio": round(ratio, 3),
            "rounds": {
                "toolkit": [round(x, 1) for x in kit],
                "plain": [round(x, 1) for x in plain],
            },
            "batch": BATCH,
            "max_length": MAX_LEN,
            "threads": torch.get_num_threads(),
            "target": f">= {TARGET}",
            "met": ratio >= TARGET,
        }
    }


def main() -> int:
    results = run()
    merge_results(results)
    print(json.dumps(results, indent=2))
    return 0 if results["train_throughput_cpu"]["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
