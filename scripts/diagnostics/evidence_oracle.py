"""How many of the frames a model saw fall inside each demo Video-MME question's evidence span?

    python scripts/diagnostics/evidence_oracle.py RUN_DIR [RUN_DIR …]   (run directories with a videomme demo)

Every demo question is generated from one scene (or the whole video) of its script (``synth.questions``:
``Question.span``). The script rebuilds each run's seed-``s`` release questions with the writer's own random
streams, matches them to the run's samples by question id, and counts the run's frame times inside the span. Prints
accuracy by task type and by frames-in-span (0, 1, ≥ 2): a question with no frame in its span can only be guessed.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from vamba_eval.synth import videomme
from vamba_eval.synth.questions import pick_questions, videomme_groups


def spans(seed: int) -> dict[str, tuple[str, tuple[int, int]]]:
    """question_id → (task type, evidence span in seconds) of the seed's demo release."""
    out = {}
    for v, plan in enumerate(videomme.plan_release(seed)):
        rng = videomme.stream_rng(seed, videomme._STREAM_QA, v)  # as videomme._rows draws them
        groups = videomme_groups(rng, videomme.QUESTIONS_PER_VIDEO * v)
        for j, q in enumerate(pick_questions(plan.script, rng, videomme.QUESTIONS_PER_VIDEO, groups)):
            out[f"{plan.video_id}-{j + 1}"] = (q.task_type, q.span)
    return out


def main(runs: list[str]) -> None:
    by_cover: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    by_type: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # right, n, without a frame
    for run in map(Path, runs):
        config = json.loads((run / "config.json").read_text())["config"]
        if config.get("data_dir"):
            sys.exit(f"{run}: evaluated on {config['data_dir']}, not the built-in demo releases this script rebuilds")
        table = spans(config["seed"])
        for line in (run / "samples.jsonl").open():
            s = json.loads(line)
            if s["task"] != "videomme":
                continue
            task_type, (start, end) = table[s["sample_id"]]
            inside = sum(start <= t < end for t in s["frame_times"])
            cover = "0" if inside == 0 else "1" if inside == 1 else "≥2"
            by_cover[cover][0] += bool(s["correct"])
            by_cover[cover][1] += 1
            row = by_type[task_type]
            row[0] += bool(s["correct"])
            row[1] += 1
            row[2] += inside == 0
    print("frames in the evidence span: right / questions")
    for cover in ("0", "1", "≥2"):
        right, n = by_cover[cover]
        print(f"  {cover:>2}: {right} / {n}" + (f" ({100 * right / n:.1f} %)" if n else ""))
    print("task type: right / questions (questions with no frame in the span)")
    for task_type, (right, n, blind) in sorted(by_type.items(), key=lambda kv: kv[1][0] / kv[1][1]):
        print(f"  {task_type:<22} {right:>3} / {n:<3} ({blind})")


if __name__ == "__main__":
    main(sys.argv[1:])
