"""The learning-rate schedules a config names are the ones the Trainer runs."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch

from modelfleet_toolkit.config import TrainConfig
from modelfleet_toolkit.train import _trainer_class, training_arguments

STEPS = 40


def _lrs(schedule: str, tmp_path: Path, **kw: object) -> list[float]:
    settings: dict[str, object] = {"warmup_ratio": 0.1, **kw}
    cfg = TrainConfig(
        data="unused.csv", schedule=schedule, learning_rate=1e-3, max_steps=STEPS,
        **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    trainer_cls = _trainer_class()
    trainer_cls.schedule = schedule
    trainer = trainer_cls(
        model=torch.nn.Linear(4, 2), args=training_arguments(cfg, tmp_path, False)
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    lrs = []
    for _ in range(STEPS):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return lrs


def test_warmup_then_cosine(tmp_path: Path) -> None:
    lrs = _lrs("cosine", tmp_path)
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(1e-3)  # 10% linear warmup
    after = lrs[4:]
    assert all(a >= b for a, b in pairwise(after))  # then only decays
    assert after[-1] < 1e-5


def test_cosine_with_restarts_goes_back_up(tmp_path: Path) -> None:
    lrs = _lrs("cosine_with_restarts", tmp_path, num_cycles=2)
    rises = [i for i in range(5, STEPS) if lrs[i] > lrs[i - 1] + 1e-6]
    assert len(rises) == 1  # one hard restart between two cosine cycles
    assert lrs[rises[0]] == pytest.approx(1e-3)


def test_one_cycle_rises_then_anneals(tmp_path: Path) -> None:
    lrs = _lrs("one_cycle", tmp_path, warmup_ratio=0.3)
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-3, rel=1e-3)
    assert 10 <= peak <= 13
    assert lrs[0] < 1e-4 and lrs[-1] < 1e-6
