"""What a device call carries besides the tree: wheels the device image lacks, and the size check.

The device image (KINDS.md) has torch, transformers, sentence-transformers, httpx, uvloop,
psutil, nvidia-ml-py and prometheus-client, but not the services' web stack; ``CARRY`` lists
what the services import beyond the image, each pinned to the version installed here (the
one the tests ran against), downloaded as cp312 manylinux wheels for the image's Python 3.12.

``python -m tests.gpu.wheels``: download them into ``.whl/``, list what the services import
that neither the image nor ``.whl/`` provides, and check that the tree, ``.gpu/`` and
``.whl/`` together stay under the 64 MiB a call may carry (exit 1 if not).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

from tests.gpu.harness import ASSETS, ROOT

WHL = ROOT / ".whl"
LIMIT_MIB = 64.0
CARRY = (
    "fastapi", "starlette", "uvicorn", "httptools", "pydantic", "pydantic-core",
    "pydantic-settings", "python-dotenv", "annotated-types", "annotated-doc",
    "typing-inspection", "typing-extensions", "orjson", "opentelemetry-api", "anyio",
)  # fmt: skip
# The device image's Python packages, as KINDS.md lists them (2026-11-17), normalised.
_IMAGE = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions
nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
"""
DEVICE_IMAGE = frozenset(_IMAGE.split())
# Imported here only through this machine's own versions of the image's packages (torch pulls
# dill, transformers httpx2 / httpcore2 / truststore), optionally (anyio: sniffio), or by
# uvicorn's reloader, which the run never uses (watchfiles).
NOT_NEEDED = frozenset({"modelfleet", "dill", "httpx2", "httpcore2", "truststore", "sniffio",
                        "watchfiles"})  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
_IMPORTS = """
import importlib, importlib.metadata as md, json, os, sys
for m in ("services.embedding.service", "services.llm.service", "services.classification.service",
          "modelfleet.app", "uvicorn", "httptools", "tests.gpu.bench_gpu", "tests.support.procs"):
    importlib.import_module(m)
# By file, not by top-level name: namespace packages (opentelemetry, google) span many dists.
owner = {}
for dist in md.distributions():
    for f in dist.files or ():
        if f.suffix in (".py", ".so"):
            owner[os.path.realpath(dist.locate_file(f))] = dist.metadata["Name"]
files = {os.path.realpath(m.__file__) for m in list(sys.modules.values())
         if getattr(m, "__file__", None)}
print(json.dumps(sorted({owner[f] for f in files if f in owner})))
"""


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def download(dest: Path = WHL) -> None:
    dest.mkdir(exist_ok=True)
    pins = [f"{name}=={md.version(name)}" for name in CARRY]
    flags = [f"--platform={p}" for p in PLATFORMS]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    *flags, "-d", str(dest), *pins], check=True)  # fmt: skip


def uncovered() -> list[str]:
    """Distributions the services import that neither the image nor CARRY provides."""
    out = subprocess.run([sys.executable, "-c", _IMPORTS], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    have = DEVICE_IMAGE | {norm(c) for c in CARRY} | NOT_NEEDED
    return [d for d in json.loads(out.strip().splitlines()[-1]) if norm(d) not in have]


def tree_mib() -> dict[str, float]:
    """MiB per part of what a call carries: tracked files, .gpu/, .whl/."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")  # fmt: skip
    sizes = {"tracked": sum((ROOT / p).stat().st_size for p in tracked if (ROOT / p).is_file())}
    for name, d in ((".gpu", ASSETS), (".whl", WHL)):
        files = d.rglob("*") if d.is_dir() else iter(())
        sizes[name] = sum(p.stat().st_size for p in files if p.is_file())
    return {k: round(v / 2**20, 1) for k, v in sizes.items()}


def main() -> int:
    download()
    missing = uncovered()
    sizes = tree_mib()
    total = sum(sizes.values())
    print(f"wheels in {WHL}: {len(list(WHL.glob('*.whl')))}; sizes MiB: {sizes}; total {total:.1f}")
    if missing:
        print(f"imported but neither in the image nor carried: {missing}")
    if total >= LIMIT_MIB:
        print(f"over the {LIMIT_MIB:.0f} MiB a device call carries", file=sys.stderr)
        return 1
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
