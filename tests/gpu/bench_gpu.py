"""``make bench-gpu``: issue 16's GPU checks and benchmarks in one run of under 8 minutes.

Sections, in this order (the decoding targets first, all measured in one run), each under its
own time limit (``LIMITS_S``) and the run's budget (``--budget-s``, 440 s by default, so with
the wheels' install and the interpreter's start the device call ends before 8 minutes):

- ``env``: GPU name, driver, CUDA, torch, transformers versions (every entry carries them);
- ``build_llm``: SmolLM2-135M's shape with seeded random weights (:mod:`tests.gpu.sec_decoder`);
- ``decoder_invariance``, ``decoder_throughput``: the engine in-process (bitwise batch
  invariance; engine vs static ``generate``, 16 x 64 tokens, target >= 2.0x);
- ``llm_service``: chat + stream checks, then 16 streams through the service: TTFT p50
  (<= 200 ms) and GPU utilisation, memory, power at saturation (>= 80 %);
- ``embedding_correctness``, ``embedding_throughput`` (FRONTENDS=1) and
  ``embedding_throughput_frontends4``: 64 single-sentence clients vs in-process
  ``encode`` at its best batch (>= 0.5);
- ``classification``; ``engine_checks`` (tests/gpu/engine_checks.py); ``vllm`` (if
  importable).

Services start early and load while the in-process sections run. ``gpu-results.json`` (raw)
and ``bench-results.json`` (entries, :mod:`tests.gpu.results`) are rewritten after every
section, so a run cut short still reports. ``--device cpu --quick`` runs every section on a
CPU in a few minutes (a 4-layer model, short loads): the dry run tests/gpu/test_bench_gpu.py
and a developer use before spending device time. tests/gpu/README.md has the device command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gpu import results, sec_decoder, sec_embedding, sec_extra, sec_services
from tests.gpu.gpuinfo import section_env
from tests.gpu.harness import ASSETS, Ctx, Report, Services, log

# Seconds per section on the GPU; the CPU dry run doubles them (--limit-scale).
LIMITS_S: dict[str, float] = {
    "env": 20,
    "build_llm": 45,
    "decoder_invariance": 40,
    "decoder_throughput": 60,
    "llm_service": 70,
    "embedding_correctness": 40,
    "embedding_throughput": 60,
    "embedding_throughput_frontends4": 45,
    "classification": 20,
    "engine_checks": 30,
    "vllm": 60,
}
SECTIONS = tuple(LIMITS_S)
NEEDS_ASSETS = set(SECTIONS) - {"env", "engine_checks"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=os.environ.get("OUT") or ".gpu-out")
    ap.add_argument("--results", default="", help="bench-results.json to merge entries into "
                    "(default: OUT/bench-results.json)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small loads and model (CPU dry run)")
    ap.add_argument("--budget-s", type=float, default=0, help="whole run (default 440, quick 900)")
    ap.add_argument("--limit-scale", type=float, default=0, help="x LIMITS_S (default 1, quick 2)")
    ap.add_argument("--load-seconds", type=float, default=10)
    ap.add_argument("--client-procs", type=int, default=0, help="default 4 (quick: 1)")
    ap.add_argument("--inproc-texts", type=int, default=8192)
    ap.add_argument("--embed-batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=0, help="timed repetitions (default 3, quick 1)")
    ap.add_argument("--layers", type=int, default=-1, help="LLM layers (default: 30, quick 4)")
    ap.add_argument("--only", default="", help="comma-separated sections to run")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = ap.parse_args(argv)
    q = args.quick
    args.budget_s = args.budget_s or (900.0 if q else 440.0)
    args.limit_scale = args.limit_scale or (2.0 if q else 1.0)
    args.client_procs = args.client_procs or (1 if q else 4)
    args.reps = args.reps or (1 if q else 3)
    args.layers = args.layers if args.layers >= 0 else (4 if q else 0)
    args.llm_dir = f"/tmp/mf-gpu/smollm2-random-l{args.layers or 'all'}"
    unknown = {s for s in (args.only + "," + args.skip).split(",") if s} - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return args


def chosen(args: argparse.Namespace) -> list[str]:
    only = [s for s in args.only.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    return [s for s in SECTIONS if (not only or s in only) and s not in skip]


def _build(res: dict[str, Any], ctx: Ctx) -> None:
    llm_dir = sec_decoder.build_random_llm(Path(ctx.args.llm_dir), ctx.args.layers)
    ctx.shared["llm_dir"] = str(llm_dir)
    res["dir"] = str(llm_dir)
    res["mib"] = round(sum(p.stat().st_size for p in llm_dir.iterdir()) / 2**20, 1)


def run(ctx: Ctx, names: list[str]) -> None:
    """Run the chosen sections in order; start each service before the sections that need it."""
    rep, svc = ctx.report, ctx.svc
    f4 = "embedding_throughput_frontends4" in names
    starts: dict[str, tuple[str, Callable[[], dict[str, str]]]] = {}
    if {"embedding_correctness", "embedding_throughput"} & set(names):
        starts["embedding"] = ("embedding", lambda: sec_embedding.service_env(ctx, 1))
    if f4:
        starts["embedding_f4"] = ("embedding", lambda: sec_embedding.service_env(ctx, 4))
    if "classification" in names:
        starts["classification"] = ("classification", lambda: sec_services.classification_env(ctx))
    if "llm_service" in names:
        starts["llm"] = ("llm", lambda: sec_services.llm_env(ctx))

    def start(keys: list[str]) -> None:
        for key in keys:
            if key in starts:
                service, env = starts[key]
                svc.start(key, service, env())
        rep.data["errors"].update({f"start_{k}": v for k, v in svc.start_errors.items()})

    emb_load = sec_embedding.section_throughput

    def limit(name: str) -> float:
        return float(min(LIMITS_S[name] * ctx.args.limit_scale, rep.left()))

    sections: dict[str, Callable[[dict[str, Any]], None]] = {
        "env": lambda r: section_env(r, ctx.device),
        "build_llm": lambda r: _build(r, ctx),
        "decoder_invariance": lambda r: sec_decoder.section_invariance(r, ctx),
        "decoder_throughput": lambda r: sec_decoder.section_throughput(r, ctx),
        "llm_service": lambda r: sec_services.section_llm(r, ctx),
        "embedding_correctness": lambda r: sec_embedding.section_correctness(r, ctx),
        "embedding_throughput": lambda r: emb_load(r, ctx, "embedding", 1),
        "embedding_throughput_frontends4": lambda r: emb_load(r, ctx, "embedding_f4", 4),
        "classification": lambda r: sec_services.section_classification(r, ctx),
        "engine_checks": lambda r: sec_extra.section_engine_checks(r, ctx),
        "vllm": lambda r: sec_extra.section_vllm(r, ctx, limit("vllm")),
    }
    needs_llm = {"decoder_invariance", "decoder_throughput", "llm_service", "vllm"}
    if needs_llm & set(names) and "build_llm" not in names:
        names = [n for n in SECTIONS if n == "build_llm" or n in names]
    start(["embedding", "embedding_f4", "classification"])
    for name in names:
        if name in NEEDS_ASSETS and not ASSETS.is_dir():
            rep.skip(name, f"{ASSETS} missing: run `python -m tests.gpu.prepare_assets` first")
        elif name == "vllm" and not sec_extra.vllm_available():
            rep.skip(name, "vllm is not importable here")
        elif name in needs_llm and "llm_dir" not in ctx.shared:
            rep.skip(name, "no LLM checkpoint (build_llm did not finish)")
        else:
            rep.section(name, sections[name], LIMITS_S[name] * ctx.args.limit_scale)
        if name == "build_llm" and "llm_dir" in ctx.shared:
            start(["llm"])
        if name == "llm_service":
            svc.stop("llm")  # free the GPU and the cores for what follows
        if name.startswith("embedding_throughput"):
            svc.stop("embedding" if name == "embedding_throughput" else "embedding_f4")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = Path(args.results) if args.results else out / "bench-results.json"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = Report(out, args.budget_s, {"args": vars(args)},
                    on_save=lambda data: results.write(data, results_path))  # fmt: skip
    ctx = Ctx(args, Services(), report)
    try:
        run(ctx, chosen(args))
    finally:
        report.data["service_log_tails"] = ctx.svc.stop_all()
        report.save()
        with (
            contextlib.suppress(Exception),
            tarfile.open(out / "service-logs.tar.gz", "w:gz") as tar,
        ):
            for key, proc in ctx.svc.procs.items():
                tar.add(proc.log_path, arcname=f"{key}-{proc.log_path.name}")
    errs = report.data["errors"]
    skipped = sorted(report.data["skipped"]) or "none"
    log(f"finished in {report.elapsed():.0f} s; errors: {sorted(errs) or 'none'}; "
        f"skipped: {skipped}; entries in {results_path}")  # fmt: skip
    for key, entry in sorted(results.entries(report.data).items()):
        figures = {k: v for k, v in entry.items() if k not in results.RUN_FIELDS}
        log(f"  {key}: {figures}")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
