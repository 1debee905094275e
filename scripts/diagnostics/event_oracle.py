"""Are the demo's "what happens to the <shape>?" questions answerable from the frames a model was shown?

    python scripts/diagnostics/event_oracle.py RUN_DIR [RUN_DIR …]   (run directories of LVBench / Video-MME demos)

For every such question in a run's samples.jsonl (LVBench and Video-MME demo releases; the seed is read from the
run's config.json), the script of its video is rebuilt from the demo writer, and the shape's state (visible, colour)
is looked up at the frame times the model saw inside the question's scene. "answerable": an event shows as two
different states, "stays unchanged" shows as ≥ 2 equal states. Prints, per event kind, answerable / total and how
many of those the model got right.
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path

from vamba_eval.synth import lvbench, videomme

QUESTION = re.compile(r"scene with the (\w+) background, what happens to the (.+?)\?")


def scripts(task: str, seed: int) -> dict[str, object]:
    if task == "videomme":
        return {k: p.script for p in videomme.plan_release(seed) for k in (p.video_id, p.video_key)}
    return {p.key: p.script for p in lvbench.plan_release(seed)}


def judge(sample: dict, script) -> tuple[str, bool]:
    bg, name = QUESTION.search(sample["prompt"]).groups()
    scene = next(s for s in script.scenes if s.background == bg)
    i = next(j for j, shape in enumerate(scene.shapes) if shape.name == name)
    times = [t for t in sample["frame_times"] if scene.start_s <= t < scene.end_s]
    states = {(scene.is_visible(i, t), scene.color_at(i, t)) for t in times}
    event = scene.shape_event(i)
    kind = event.kind if event else "stays"
    return kind, (len(states) > 1) if event else (len(times) >= 2 and len(states) == 1)


def main(runs: list[str]) -> None:
    tally: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # total, answerable, right
    for run in map(Path, runs):
        if not (run / "config.json").is_file() or not (run / "samples.jsonl").is_file():
            sys.exit(f"{run}: not a run directory of `vamba-eval run` (config.json and samples.jsonl)")
        config = json.loads((run / "config.json").read_text())["config"]
        if config.get("data_dir"):
            sys.exit(f"{run}: evaluated on {config['data_dir']}, not the built-in demo releases this script rebuilds")
        seed = config["seed"]
        cache: dict[str, dict] = {}
        for line in (run / "samples.jsonl").open():
            s = json.loads(line)
            if s["task"] not in ("lvbench", "videomme") or not QUESTION.search(s["prompt"]):
                continue
            table = cache.setdefault(s["task"], scripts(s["task"], seed))
            if s["video_key"] not in table:
                sys.exit(f"{run}: video {s['video_key']} is not in the seed-{seed} demo release of {s['task']}")
            kind, ok = judge(s, table[s["video_key"]])
            row = tally[(s["task"], kind)]
            row[0] += 1
            row[1] += ok
            row[2] += bool(ok and s["correct"])
    for (task, kind), (n, ok, right) in sorted(tally.items()):
        print(f"{task:9s} {kind:10s} answerable {ok:3d}/{n:3d}, right on {right:3d} of those")


if __name__ == "__main__":
    main(sys.argv[1:])
