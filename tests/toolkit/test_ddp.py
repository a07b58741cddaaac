"""Data-parallel training: two gloo processes under torchrun match one process at the same
global batch (per-device batch 4 x 2 processes == batch 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.toolkit.conftest import ROOT, shipped_rows, write_csv


def _train_cmd(launcher: list[str], data: Path, model: Path, out: Path, batch: int) -> list[str]:
    return [
        *launcher, "-m", "modelfleet_toolkit", "train", "--json", "--no-track",
        "--model", str(model), "--data", str(data), "--eval-fraction", "0", "--max-length", "24",
        "--batch-size", str(batch), "--max-steps", "6", "--learning-rate", "5e-3",
        "--dropout", "0", "--sampler", "sequential", "--device", "cpu", "--seed", "7",
        "--output-dir", str(out),
    ]  # fmt: skip


# torchrun in the default tier; accelerate's launcher (which runs the same torch.distributed
# workers) in the slow tier.
LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}  # fmt: skip


@pytest.mark.parametrize(
    "launcher", ["torchrun", pytest.param("accelerate", marks=pytest.mark.slow)]
)
def test_two_process_ddp_matches_single_process(
    tmp_path: Path, tiny_encoder: Path, launcher: str
) -> None:
    data = write_csv(tmp_path / "s.csv", shipped_rows("sentiment", 16))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}:{ROOT}", "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(
        _train_cmd([sys.executable], data, tiny_encoder, single, 8),
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    proc = subprocess.Popen(
        _train_cmd([sys.executable, *LAUNCHERS[launcher]], data, tiny_encoder, ddp, 4),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # a hung collective: end the launcher and both workers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    a = load_file(str(single / "model.safetensors"))
    b = load_file(str(ddp / "model.safetensors"))
    assert a.keys() == b.keys()
    start = load_file(str(tiny_encoder / "model.safetensors"))
    moved = 0.0
    for key in a:
        # Same updates up to float summation order (gradients all-reduced across two ranks).
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
        if key.removeprefix("bert.") in start:
            moved = max(moved, float((a[key] - start[key.removeprefix("bert.")]).abs().max()))
    assert moved > 1e-3  # both runs trained: not a comparison of two untouched models
