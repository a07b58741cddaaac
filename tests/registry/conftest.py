"""Fixtures of the registry tests: a real fine-tuned classifier, its exported flavours (both
cached under .run/ across sessions), and MLflow stores in temporary directories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ROOT
from tests.support.trained import CACHE, cached_model, held_out, intent_examples

# The export is cached by the code that makes and measures it: editing either re-runs it.
_EXPORT_CODE = (
    ROOT / "shared" / "modelfleet_toolkit" / "export.py",
    ROOT / "shared" / "modelfleet" / "flavours.py",
)


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """MiniLM fine-tuned on the shipped intent examples (a real, short Trainer run)."""
    return cached_model()


@pytest.fixture(scope="session")
def exported_model(trained_model: Path) -> Path:
    """The trained model with every flavour exported and measured on the intent held-out set."""
    from modelfleet_toolkit.export import export

    h = hashlib.sha256(trained_model.name.encode())
    for p in _EXPORT_CODE:
        h.update(p.read_bytes())
    out = CACHE / f"{trained_model.name}-exported-{h.hexdigest()[:10]}"
    if not (out / "flavours").exists():
        for stale in CACHE.glob(f"{trained_model.name}-exported-*"):  # older code's exports
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trained_model, tmp)
        texts, labels = held_out()
        calibration = intent_examples()[0][::4]  # 70 training texts
        export(tmp, texts, labels, calibration=calibration, held_out_name="intent/test.csv",
               rounds=1)  # fmt: skip
        os.replace(tmp, out)
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh MLflow SQLite store (tracking + registry) in the test's tmp dir."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri


def cli(
    *args: str, uri: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``modelfleet ARGS`` in a real process against the store ``uri``."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-m", "modelfleet_toolkit", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
