"""`vamba-eval regress`: exact McNemar, Holm across tasks, video bootstrap, exit codes, escaped HTML."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
import typer

from vamba_eval.cli_extra import register
from vamba_eval.paired_stats import cluster_bootstrap_delta, holm, mcnemar_exact, paired_outcome, task_seed
from vamba_eval.records import SampleRecord, dump_json_line
from vamba_eval.regress import compare, render_html, to_markdown

XSS = "<script>alert('pwned')</script>"


def _config(tasks: Sequence[str], *, revision: str = "rev1", frames: str = "n8|uniform", scoring: str = "official",
            subtitles: bool = False, n: Optional[int] = None, model_path: str = "ckpt-a") -> dict:
    return {
        "run_id": "x",
        "config": {"tasks": list(tasks), "scoring": scoring, "subtitles": subtitles, "frames": None, "limit": None,
                   "seed": 0, "model": "vamba", "model_path": model_path},
        "config_hash": model_path,
        "environment": {"datasets": {t: {"revision": revision, "n_samples": n, "synthetic": False, "limit": None}
                                     for t in tasks}},
        "frames": {t: frames for t in tasks},
        "model": {"name": "vamba", "path": model_path},
    }


def make_run(root: Path, name: str, outcomes: dict[str, list[tuple[str, str, Optional[bool]]]],
             responses: Optional[dict[str, str]] = None, **cfg) -> Path:
    """A run directory from (sample id, video, correct) triples per task."""
    run = root / name
    run.mkdir(parents=True)
    conf = _config(list(outcomes), model_path=name, **cfg)
    conf["run_id"] = name
    (run / "config.json").write_text(json.dumps(conf))
    lines = []
    for task, triples in outcomes.items():
        for sid, video, ok in triples:
            resp = (responses or {}).get(sid, "A" if ok else "B")
            lines.append(dump_json_line(SampleRecord(
                task=task, sample_id=sid, video=f"{video}.mp4", video_key=video, gold="A", response=resp,
                extracted=None if ok is None else ("A" if ok else "B"), correct=ok, extraction_rule="letter",
                frame_indices=[0, 1], frame_size=[64, 64])))
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return run


def pairs(base: Sequence[bool], cand: Sequence[bool], per_video: int = 1, prefix: str = "q"):
    ids = [(f"{prefix}{i}", f"v{i // per_video}") for i in range(len(base))]
    return ([(s, v, b) for (s, v), b in zip(ids, base)], [(s, v, c) for (s, v), c in zip(ids, cand)])


def table(b: int, c: int, both_right: int = 10, both_wrong: int = 5):
    """Verdict lists with exactly b (base right, cand wrong) and c (base wrong, cand right) discordant pairs."""
    base = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    cand = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return base, cand


# --------------------------------------------------------------------------- statistics


def test_mcnemar_exact_matches_hand_computation():
    # b=2, c=10: two-sided exact = 2·P(X ≤ 2 | n=12, ½) = 2·(1 + 12 + 66)/4096
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_compare_uses_the_discordant_table(tmp_path: Path):
    base, cand = table(b=2, c=10)
    a, b = pairs(base, cand)
    rep = compare(make_run(tmp_path, "A", {"lvbench": a}), make_run(tmp_path, "B", {"lvbench": b}))
    o = rep.tasks[0].outcome
    assert (o.b, o.c, o.n) == (2, 10, 27)
    assert o.p_value == pytest.approx(158 / 4096)
    assert o.delta == pytest.approx(100 * 8 / 27)
    assert rep.tasks[0].status == "improvement" and rep.exit_code == 0


def test_no_discordant_pairs_is_p_one_and_passes(tmp_path: Path):
    base, cand = table(b=0, c=0)
    a, b = pairs(base, cand)
    rep = compare(make_run(tmp_path, "A", {"lvbench": a}), make_run(tmp_path, "B", {"lvbench": b}))
    t = rep.tasks[0]
    assert t.outcome.p_value == 1.0 and t.p_holm == 1.0 and t.outcome.ci95 == (0.0, 0.0)
    assert t.status == "no significant change" and rep.exit_code == 0


def _cli(argv: list[str]) -> int:
    app = typer.Typer(add_completion=False)
    app.command("noop")(lambda: None)
    register(app)
    try:
        app(args=argv, standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_planted_drop_fails_with_exit_code_1(tmp_path: Path, capsys):
    base, cand = table(b=20, c=0, both_right=30, both_wrong=10)
    a, b = pairs(base, cand, per_video=2)
    ra, rb = make_run(tmp_path, "A", {"lvbench": a}), make_run(tmp_path, "B", {"lvbench": b})
    rep = compare(ra, rb)
    assert rep.tasks[0].status == "regression" and rep.exit_code == 1
    assert rep.tasks[0].outcome.ci95[1] < 0
    md_file = tmp_path / "summary.md"
    code = _cli(["regress", "--baseline", str(ra), "--candidate", str(rb), "--markdown", str(md_file)])
    out = capsys.readouterr().out
    assert code == 1
    assert "REGRESSION" in out and "| lvbench | 60 |" in out
    assert md_file.read_text() == to_markdown(rep)


def test_significant_drop_below_min_delta_passes(tmp_path: Path):
    base, cand = table(b=20, c=0, both_right=700, both_wrong=280)  # n = 1000: Δ = −2.0 points, p ≈ 2e-6
    a, b = pairs(base, cand)
    ra, rb = make_run(tmp_path, "A", {"lvbench": a}), make_run(tmp_path, "B", {"lvbench": b})
    rep = compare(ra, rb, min_delta=3.0)
    assert rep.tasks[0].outcome.delta == pytest.approx(-2.0)
    assert rep.tasks[0].p_holm < 1e-4
    assert rep.tasks[0].status == "significant, below min-delta" and rep.exit_code == 0
    assert _cli(["regress", "--baseline", str(ra), "--candidate", str(rb), "--min-delta", "3"]) == 0
    assert compare(ra, rb, min_delta=0.5).exit_code == 1


def test_holm_across_tasks_can_clear_a_raw_significant_drop(tmp_path: Path):
    runs_a, runs_b = {}, {}
    for task, (b, c) in {"lvbench": (6, 0), "videomme": (3, 3), "mvbench": (2, 2)}.items():
        base, cand = table(b=b, c=c)
        runs_a[task], runs_b[task] = pairs(base, cand, prefix=task)
    rep = compare(make_run(tmp_path, "A", runs_a), make_run(tmp_path, "B", runs_b))
    by = {t.task: t for t in rep.tasks}
    assert by["lvbench"].outcome.p_value == pytest.approx(2 * 0.5**6)  # 0.031 < 0.05 alone …
    assert by["lvbench"].p_holm == pytest.approx(3 * 2 * 0.5**6)  # … 0.094 after Holm over 3 tasks
    assert by["videomme"].p_holm == 1.0
    assert by["lvbench"].status == "no significant change" and rep.exit_code == 0
    only_one = compare(make_run(tmp_path, "A1", {"lvbench": runs_a["lvbench"]}),
                       make_run(tmp_path, "B1", {"lvbench": runs_b["lvbench"]}))
    assert only_one.tasks[0].status == "regression"  # the same drop, tested alone


def test_bootstrap_resamples_videos():
    n_videos, per = 20, 5
    base = np.ones(n_videos * per, dtype=bool)
    videos = [f"v{i // per}" for i in range(n_videos * per)]
    correlated = base.copy()
    correlated[: 4 * per] = False  # every question of 4 videos flips
    spread = base.copy()
    spread[::per] = False  # one question in each of the 20 videos flips
    wide = cluster_bootstrap_delta(base, correlated, videos, task_seed(0, "t"))
    narrow = cluster_bootstrap_delta(base, spread, videos, task_seed(0, "t"))
    assert (wide[1] - wide[0]) > 2 * (narrow[1] - narrow[0])
    # resampling questions as if independent would give the same (narrow) interval to both
    indep = [str(i) for i in range(n_videos * per)]
    iid = cluster_bootstrap_delta(base, correlated, indep, task_seed(0, "t"))
    assert (wide[1] - wide[0]) > 1.5 * (iid[1] - iid[0])
    again = cluster_bootstrap_delta(base, correlated, videos, task_seed(0, "t"))
    assert again == wide  # seeded
    o = paired_outcome(base, correlated, videos, task_seed(0, "t"))
    assert o.n_videos == n_videos and o.ci95 == wide and o.delta == pytest.approx(-20.0)


def test_preconditions(tmp_path: Path):
    a, _ = pairs(*table(3, 3))
    b = a[:-2] + [("extra-1", "v9", True)]
    ra = make_run(tmp_path, "A", {"lvbench": a, "videomme": a})
    rb = make_run(tmp_path, "B", {"lvbench": b}, frames="n4|uniform")
    rep = compare(ra, rb)
    t = rep.tasks[0]
    assert t.only_baseline == [a[-2][0], a[-1][0]] and t.only_candidate == ["extra-1"]
    assert any("frame spec differs" in w for w in t.warnings)
    assert rep.tasks_only_baseline == ["videomme"]
    md = to_markdown(rep)
    assert "only in the baseline" in md and "extra-1" in md and "frame spec differs" in md
    rc = make_run(tmp_path, "C", {"lvbench": a}, revision="rev2", scoring="lmms-eval")
    blocked = compare(ra, rc)
    problems = " ".join(blocked.tasks[0].problems)
    assert "dataset revision differs" in problems and "scoring differs" in problems
    assert blocked.tasks[0].outcome is None and blocked.exit_code == 2
    assert "not compared" in to_markdown(blocked)


def test_html_lists_flips_escaped(tmp_path: Path):
    base, cand = table(b=3, c=1)
    a, b = pairs(base, cand)
    ra = make_run(tmp_path, "A", {"lvbench": a})
    rb = make_run(tmp_path, "B", {"lvbench": b}, responses={"q0": XSS})
    page = render_html(compare(ra, rb), tmp_path / "regress.html")
    html = page.read_text(encoding="utf-8")
    assert XSS not in html and "&lt;script&gt;alert(" in html
    assert html.count("<script") == 1  # only the page's own (empty) script element
    assert "q0" in html and "Lost: baseline right" in html and "Gained" in html
    assert "http://" not in html and "https://" not in html
    assert not math.isnan(compare(ra, rb).tasks[0].p_holm)


def test_graded_task_is_reported_not_gated(tmp_path: Path):
    base, cand = table(b=8, c=0)
    a, b = pairs(base, cand)
    ra, rb = make_run(tmp_path, "A", {"lvbench": a, "gveval": []}), make_run(tmp_path, "B", {"lvbench": b, "gveval": []})
    for run, value in ((ra, 80.0), (rb, 20.0)):
        rec = SampleRecord(task="gveval", sample_id="c1", video="img.jpg", video_key="img", response="a caption",
                           score=value, extraction_rule="judge")
        with (run / "samples.jsonl").open("a") as fh:
            fh.write(dump_json_line(rec) + "\n")
    rep = compare(ra, rb)
    by = {t.task: t for t in rep.tasks}
    assert by["gveval"].status == "not gated (graded)" and by["gveval"].outcome is None
    assert by["lvbench"].status == "regression" and rep.exit_code == 1
    assert "McNemar does not apply" in to_markdown(rep)
