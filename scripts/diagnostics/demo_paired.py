"""Paired comparison of two models over several demo releases (e.g. seeds 0–4): exact McNemar per task and pooled.

    python scripts/diagnostics/demo_paired.py BASE_RUN[,BASE_RUN …] NEW_RUN[,NEW_RUN …]

The i-th base run and the i-th new run must be the same release (same seed): questions are matched by
(task, sample_id) within each pair of runs, and a pair whose matched questions differ (prompt or gold: e.g. the
runs given in another order) is refused. A question counts only when both runs scored it. Prints, per task and
over all tasks, the questions compared, both accuracies, the discordant counts (b: base right and new wrong,
c: base wrong and new right) and the two-sided exact McNemar p-value (vamba_eval.paired_stats), which
`vamba-eval regress` applies per run; pooling the releases gives it five times the questions.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from vamba_eval.paired_stats import mcnemar_exact


def outcomes(run: Path) -> dict[tuple[str, str], tuple[bool, str]]:
    """(task, sample_id) → (correct, prompt + gold), for the scored questions of one run directory."""
    path = run / "samples.jsonl"
    if not path.is_file():
        sys.exit(f"{run}: no samples.jsonl — pass run directories written by `vamba-eval run`")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("correct") is not None:
            out[(rec["task"], str(rec["sample_id"]))] = (bool(rec["correct"]), f"{rec['prompt']}\n{rec['gold']}")
    return out


def tally(pairs: list[tuple[Path, Path]]) -> dict[str, list[int]]:
    """task → [n, base right, new right, b, c] summed over the run pairs (key "all" for every task)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for base_run, new_run in pairs:
        base, new = outcomes(base_run), outcomes(new_run)
        shared = base.keys() & new.keys()
        differ = [k for k in shared if base[k][1] != new[k][1]]
        if differ or not shared:
            sys.exit(f"{base_run} and {new_run} are not runs of the same release ({len(differ)} of {len(shared)} "
                     "shared questions differ): give the runs of each seed in the same order")
        for key in shared:
            x, y = base[key][0], new[key][0]
            for name in (key[0], "all"):
                row = counts[name]
                row[0] += 1
                row[1] += x
                row[2] += y
                row[3] += x and not y
                row[4] += y and not x
    return counts


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    base, new = ([Path(p) for p in arg.split(",")] for arg in sys.argv[1:])
    if len(base) != len(new):
        sys.exit(f"{len(base)} base runs but {len(new)} new runs: give one of each per release, in the same order")
    counts = tally(list(zip(base, new)))
    print(f"{'task':16s} {'n':>5s} {'base %':>7s} {'new %':>7s} {'b':>4s} {'c':>4s}  McNemar p")
    for name in sorted(counts, key=lambda t: (t == "all", t)):
        n, rb, rn, b, c = counts[name]
        print(f"{name:16s} {n:5d} {100 * rb / n:7.1f} {100 * rn / n:7.1f} {b:4d} {c:4d}  {mcnemar_exact(b, c):.2g}")


if __name__ == "__main__":
    main()
