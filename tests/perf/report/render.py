"""The fleet report: PNG charts (matplotlib, no display) and one Markdown page."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

ROUTES = ("embeddings", "classify", "chat", "completions", "summarize")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _route(level: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in level["routes"] if r["route"] == name)


def charts(data: dict[str, Any], out: Path) -> dict[str, str]:
    plt = _plt()
    levels = data["levels"]
    cs = [lv["concurrency"] for lv in levels]
    files: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ROUTES:
        ax.plot(cs, [_route(lv, name)["rps"] for lv in levels], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="connections per route", ylabel="requests/s",
           title="Throughput per route through the gateway")  # fmt: skip
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.legend()
    files["throughput"] = _save(fig, out / "throughput.png")

    fig, axes = plt.subplots(1, len(ROUTES), figsize=(16, 3.6), sharex=True)
    for ax, name in zip(axes, ROUTES, strict=True):
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            ax.plot(cs, [_route(lv, name)[q] for lv in levels], marker="o", label=q[:3])
        ax.set(xscale="log", yscale="log", title=name, xlabel="connections")
        ax.set_xticks(cs, [str(c) for c in cs])
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend()
    files["latency"] = _save(fig, out / "latency.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("embeddings", "classify", "chat", "completions"):
        ratios = [_route(lv, name)["cache_hits"] / max(1, _route(lv, name)["requests"])
                  for lv in levels]  # fmt: skip
        ax.plot(cs, ratios, marker="o", label=name)
    ax.set(xscale="log", xlabel="connections per route", ylabel="x-cache: hit share",
           title="Cache hit ratio (a quarter of the texts repeat)", ylim=(0, 1))  # fmt: skip
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.legend()
    files["cache"] = _save(fig, out / "cache_hits.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for svc in levels[0]["mean_batch"]:
        ax.plot(cs, [lv["mean_batch"][svc] or 0 for lv in levels], marker="o", label=svc)
    ax.set(xscale="log", xlabel="connections per route", ylabel="mean batch size",
           title="Items per forward pass / sequences per decoding step")  # fmt: skip
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.legend()
    files["batches"] = _save(fig, out / "batch_sizes.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, samples in data["rss"].items():
        ax.plot([t for t, _ in samples], [v for _, v in samples], label=name)
    ax.set(xlabel="seconds", ylabel="RSS (MiB)", title="Resident memory of every process")
    ax.legend(fontsize=8)
    files["rss"] = _save(fig, out / "rss.png")

    dvg, cache = data["direct_vs_gateway"], data["cache"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.bar(["direct", "gateway"], [_med(dvg["direct"], "rps"), _med(dvg["gateway"], "rps")])
    a1.set(title="Embeddings, 16 connections", ylabel="requests/s")
    a2.bar(["cache off", "cache on"], [cache["off"]["rps"], cache["on"]["rps"]])
    a2.set(title="Gateway, half the texts repeated", ylabel="requests/s")
    files["compare"] = _save(fig, out / "comparisons.png")
    return files


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def render(data: dict[str, Any], out: Path) -> Path:
    files = charts(data, out)
    lines = [
        "# Fleet report",
        "",
        f"One fleet (Redis, four services, one gateway) on this machine; started in "
        f"{data['startup_s']:.0f} s, measured for {data['total_s'] - data['startup_s']:.0f} s. "
        f"Each level ran {data['level_seconds']:.0f} s with every route at once; decoder routes "
        f"use at most {data['decoder_max_connections']} connections. Raw figures: "
        "`fleet-report.json`.",
        "",
        "## Per route and concurrency (through the gateway)",
        "",
        "| connections | route | requests | req/s | p50 ms | p95 ms | p99 ms | errors | hits |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in data["levels"]:
        for r in lv["routes"]:
            lines.append(
                f"| {lv['concurrency']} ({r['connections']}) | {r['route']} | {r['requests']} | "
                f"{r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['errors']} | {r['cache_hits'] / max(1, r['requests']):.0%} |"
            )
    lines += ["", "Mean batch size per service:", "",
              "| connections | " + " | ".join(data["levels"][0]["mean_batch"]) + " |",
              "|---:|" + "---:|" * len(data["levels"][0]["mean_batch"])]  # fmt: skip
    for lv in data["levels"]:
        cells = [f"{v:.1f}" if v else "-" for v in lv["mean_batch"].values()]
        lines.append(f"| {lv['concurrency']} | " + " | ".join(cells) + " |")
    dvg, cache = data["direct_vs_gateway"], data["cache"]
    d_rps, g_rps = _med(dvg["direct"], "rps"), _med(dvg["gateway"], "rps")
    lines += [
        "",
        "## Same-run comparisons (embeddings, 16 connections)",
        "",
        "| | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        f"| direct to the service | {d_rps:.1f} | {_med(dvg['direct'], 'p50_ms'):.1f} | "
        f"{_med(dvg['direct'], 'p99_ms'):.1f} | {sum(r['errors'] for r in dvg['direct'])} |",
        f"| through the gateway (no-cache) | {g_rps:.1f} | {_med(dvg['gateway'], 'p50_ms'):.1f} "
        f"| {_med(dvg['gateway'], 'p99_ms'):.1f} | {sum(r['errors'] for r in dvg['gateway'])} |",
        f"| gateway, cache off (half repeated) | {cache['off']['rps']:.1f} | "
        f"{cache['off']['p50_ms']:.1f} | {cache['off']['p99_ms']:.1f} | {cache['off']['errors']} |",
        f"| gateway, cache on (half repeated) | {cache['on']['rps']:.1f} | "
        f"{cache['on']['p50_ms']:.1f} | {cache['on']['p99_ms']:.1f} | {cache['on']['errors']} |",
        "",
        f"Gateway/direct throughput: {g_rps / d_rps if d_rps else 0:.2f}; cache on/off: "
        f"{cache['on']['rps'] / cache['off']['rps'] if cache['off']['rps'] else 0:.2f} "
        f"(hit share with the cache on: "
        f"{cache['on']['cache_hits'] / max(1, cache['on']['requests']):.0%}).",
        "",
        "## RSS (MiB): first sample, last sample, peak",
        "",
        "| process | first | last | peak |",
        "|---|---:|---:|---:|",
    ]
    for name, s in data["rss"].items():
        vals = [v for _, v in s]
        lines.append(f"| {name} | {vals[0]:.0f} | {vals[-1]:.0f} | {max(vals):.0f} |")
    lines += ["", "## Charts", ""]
    lines += [f"![{k}]({v})" for k, v in files.items()]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
