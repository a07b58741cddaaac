"""``make bench``: every benchmark in tests/perf, merged into bench-results.json.

Each module exposes ``run() -> dict[name, figures]``. Select with ``BENCH=embedding,gateway``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

from tests.perf.common import RESULTS, merge_results

BENCHES = ("embedding", "decoder", "gateway")


def main() -> int:
    chosen = [b for b in os.environ.get("BENCH", ",".join(BENCHES)).split(",") if b]
    failed = []
    for name in chosen:
        print(f"== bench {name}", flush=True)
        try:
            module = importlib.import_module(f"tests.perf.bench_{name}")
            results = module.run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        merge_results(results)
        print(json.dumps(results, indent=2), flush=True)
    print(f"\nresults merged into {RESULTS}")
    summary = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, entry in sorted(summary.items()):
        met = entry.get("met")
        mark = "ok  " if met else ("MISS" if met is False else "    ")
        figures = {k: v for k, v in entry.items() if k not in ("met", "target")}
        print(f"  {mark} {key}: {figures} (target {entry.get('target', '-')})")
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
