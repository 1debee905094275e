"""Pool plain accuracy per task over several runs' results.json (e.g. the demo releases of seeds 0–4).

    python scripts/diagnostics/demo_pool.py LABEL=RESULTS.json[,RESULTS.json …] …

Per task: right answers / scored questions summed over the files (MLVU's M-Avg is a mean of its sub-tasks,
so its right answers are summed from the per-task breakdown), and the ratio to the guessing rate of a
4-option question (LongVideoBench: 22.5 %, the demo's mix of 4- and 5-option questions; MVBench: 26.7 %).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHANCE = {"lvbench": 25.0, "videomme": 25.0, "mlvu": 25.0, "longvideobench": 22.5, "mvbench": 26.7}


def right_and_scored(task: dict) -> tuple[int, int]:
    right = task["overall"].get("correct")
    if right is None:  # MLVU M-Avg: sum its sub-tasks
        right = sum(b["correct"] for b in task["breakdowns"]["task"].values())
    return int(right), int(task["n_scored"])


def pool(files: list[Path]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for file in files:
        for name, task in json.loads(file.read_text())["tasks"].items():
            r, n = right_and_scored(task)
            a, b = out.get(name, (0, 0))
            out[name] = (a + r, b + n)
    return out


def main() -> None:
    for arg in sys.argv[1:]:
        label, _, paths = arg.partition("=")
        pooled = pool([Path(p) for p in paths.split(",")])
        cells = [f"{t} {100 * r / n:.1f} % ({r}/{n}" + (f", {100 * r / n / CHANCE[t]:.1f}× chance)" if t in CHANCE else ")")
                 for t, (r, n) in sorted(pooled.items())]
        total_r, total_n = sum(r for r, _ in pooled.values()), sum(n for _, n in pooled.values())
        print(f"{label}: all {100 * total_r / total_n:.1f} % ({total_r}/{total_n}); " + "; ".join(cells))


if __name__ == "__main__":
    main()
