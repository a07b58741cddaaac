"""``python -m tests.perf.report [--out DIR]``: measure the fleet, then write the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.perf.report.measure import LEVELS, measure
from tests.perf.report.render import render


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path(".run/fleet-report"))
    p.add_argument("--level-seconds", type=float, default=20.0,
                   help="load duration of each concurrency level")  # fmt: skip
    p.add_argument("--compare-seconds", type=float, default=15.0,
                   help="each side of the direct/gateway and cache comparisons")  # fmt: skip
    p.add_argument("--levels", default=",".join(map(str, LEVELS)))
    a = p.parse_args()
    levels = tuple(int(x) for x in a.levels.split(","))
    data = measure(levels, a.level_seconds, a.compare_seconds)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "fleet-report.json").write_text(json.dumps(data, indent=2) + "\n")
    report = render(data, a.out)
    print(report.read_text())
    print(f"report: {report}")


if __name__ == "__main__":
    main()
