"""``vamba-eval regress``: is the candidate run really worse than the baseline, or is it noise?

The test is fixed before anything is looked at (shared/specs/ray_stats_reports.md):

* Per task, the questions BOTH runs scored (shared sample ids, a verdict in each) are paired.
  Exact McNemar on the discordant pairs: p = binomtest(b, b + c, 0.5); b + c = 0 → p = 1.
* Holm's adjustment across the compared tasks.
* A task is a REGRESSION iff Holm p < α AND Δ = acc(candidate) − acc(baseline) ≤ −min_delta
  (percentage points). Exit code 1 iff some task regressed; 2 when a precondition fails (the runs
  cannot be compared on some task); else 0.
* Δ's 95 % interval: paired bootstrap resampling videos (seeded); reported, not used to decide.

Preconditions, checked per task: same dataset revision, same synthetic/real data, same scoring
mode, same subtitle setting (each an error: that task is not compared). Differing frame spec,
edges, max_new_tokens, dtype, SSM backend, seed or limit are warnings. Sample ids found in only
one run, and shared ids without a verdict in one run (errors, official exclusions), are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vamba_eval.paired_stats import N_BOOT, PairedOutcome, holm, paired_outcome, task_seed
from vamba_eval.records import SampleRecord
from vamba_eval.run import store

ERROR_KEYS = ("scoring", "subtitles")  # change the verdict rule or the prompt → not comparable
WARN_KEYS = ("frames", "max_edge", "min_edge", "max_new_tokens", "dtype", "ssm_backend", "chunk_frames",
             "seed", "limit", "compile")
FRAME_KEYS = ("frames", "max_edge", "min_edge")
FLIPS_SHOWN = 500


class RegressError(ValueError):
    """The comparison cannot start (missing run files …); the message names the file."""


def natural_key(sample_id: str) -> tuple:
    """"2" < "10"; "001-2" < "001-10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", sample_id) if p)


@dataclass(frozen=True)
class Flip:
    """A question whose verdict changed between the runs."""

    task: str
    sample_id: str
    video_key: str
    gold: str
    lost: bool  # True: baseline right → candidate wrong
    baseline_response: Optional[str]
    baseline_extracted: Optional[str]
    candidate_response: Optional[str]
    candidate_extracted: Optional[str]


@dataclass
class TaskComparison:
    task: str
    outcome: Optional[PairedOutcome] = None
    p_holm: Optional[float] = None
    status: str = "not compared"
    problems: list[str] = field(default_factory=list)  # preconditions that failed: task not compared
    warnings: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)  # shared ids without a verdict in one run
    failed: tuple[int, int] = (0, 0)  # sample errors (baseline, candidate) among the shared ids
    flips: list[Flip] = field(default_factory=list)


@dataclass
class RunInfo:
    path: Path
    run_id: str
    config: dict[str, Any]
    records: dict[tuple[str, str], SampleRecord]

    @property
    def model(self) -> str:
        m = self.config.get("model") or {}
        return f"{m.get('name', '?')} ({m.get('path', '?')})" if isinstance(m, dict) else str(m)

    def datasets(self) -> dict[str, Any]:
        return ((self.config.get("environment") or {}).get("datasets") or {})

    def tasks(self) -> list[str]:
        return list((self.config.get("config") or {}).get("tasks") or self.datasets())


@dataclass
class RegressReport:
    baseline: RunInfo
    candidate: RunInfo
    alpha: float
    min_delta: float
    seed: int
    n_boot: int
    tasks: list[TaskComparison]
    tasks_only_baseline: list[str]
    tasks_only_candidate: list[str]
    warnings: list[str]

    @property
    def regressions(self) -> list[TaskComparison]:
        return [t for t in self.tasks if t.status == "regression"]

    @property
    def blocked(self) -> list[TaskComparison]:
        return [t for t in self.tasks if t.problems]

    @property
    def exit_code(self) -> int:
        if self.regressions:
            return 1
        return 2 if self.blocked or not any(t.outcome for t in self.tasks) else 0

    @property
    def verdict(self) -> str:
        return {1: "REGRESSION", 2: "CANNOT COMPARE", 0: "no significant regression"}[self.exit_code]


def load_run(path: Path) -> RunInfo:
    path = Path(path)
    try:
        config = store.read_config(path)
    except store.RunDirError as err:
        raise RegressError(str(err)) from None
    samples = path / store.SAMPLES
    if not samples.is_file():
        raise RegressError(f"{samples}: not found; regress compares per-sample verdicts, so both runs need samples.jsonl")
    try:
        records = store.load_records(samples)
    except store.RunDirError as err:
        raise RegressError(str(err)) from None
    return RunInfo(path, str(config.get("run_id") or path.name), config, records)


# --------------------------------------------------------------------------- preconditions


def _preconditions(task: str, a: RunInfo, b: RunInfo) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    da, db = a.datasets().get(task) or {}, b.datasets().get(task) or {}
    if da.get("revision") != db.get("revision"):
        problems.append(f"dataset revision differs ({da.get('revision')} vs {db.get('revision')}): the questions may "
                        "differ; compare runs on the same release")
    if bool(da.get("synthetic")) != bool(db.get("synthetic")):
        problems.append("one run used the synthetic demo data and the other the real release")
    ca, cb = a.config.get("config") or {}, b.config.get("config") or {}
    for key in ERROR_KEYS:
        if ca.get(key) != cb.get(key):
            fix = " (re-score one run: `vamba-eval score RUN --scoring …`)" if key == "scoring" else ""
            problems.append(f"config {key} differs ({ca.get(key)!r} vs {cb.get(key)!r}){fix}")
    fa, fb = (a.config.get("frames") or {}).get(task), (b.config.get("frames") or {}).get(task)
    if fa != fb:
        warnings.append(f"frame spec differs ({fa} vs {fb})")
    # with both effective frame specs recorded, the frame keys are judged by the spec alone
    keys = [k for k in WARN_KEYS if not (fa and fb and k in FRAME_KEYS)]
    for key in keys:
        if ca.get(key) != cb.get(key):
            warnings.append(f"config {key} differs ({ca.get(key)!r} vs {cb.get(key)!r})")
    if da.get("n_samples") != db.get("n_samples"):
        warnings.append(f"evaluated split size differs ({da.get('n_samples')} vs {db.get('n_samples')}); "
                        "only the shared sample ids are compared")
    return problems, warnings


def _by_id(run: RunInfo, task: str) -> dict[str, SampleRecord]:
    return {sid: rec for (t, sid), rec in run.records.items() if t == task}


def _flip(task: str, ra: SampleRecord, rb: SampleRecord) -> Flip:
    return Flip(task, ra.sample_id, ra.video_key, ra.gold, bool(ra.correct), ra.response, ra.extracted,
                rb.response, rb.extracted)


def _compare_task(task: str, a: RunInfo, b: RunInfo, seed: int, n_boot: int) -> TaskComparison:
    problems, warnings = _preconditions(task, a, b)
    ra, rb = _by_id(a, task), _by_id(b, task)
    cmp = TaskComparison(task, problems=problems, warnings=warnings,
                         only_baseline=sorted(set(ra) - set(rb), key=natural_key),
                         only_candidate=sorted(set(rb) - set(ra), key=natural_key))
    shared = sorted(set(ra) & set(rb), key=natural_key)
    cmp.failed = (sum(ra[s].error is not None for s in shared), sum(rb[s].error is not None for s in shared))
    if cmp.failed[1] > cmp.failed[0]:
        warnings.append(f"candidate has more failed samples ({cmp.failed[1]} vs {cmp.failed[0]}); failures are "
                        "not in the paired comparison")
    if any(ra[s].score is not None or rb[s].score is not None for s in shared) and not any(
            ra[s].correct is not None for s in shared):
        warnings.append("graded task (judge scores, no right/wrong verdicts): McNemar does not apply; not gated")
        cmp.status = "not gated (graded)"
        return cmp
    moved = [s for s in shared if ra[s].video_key != rb[s].video_key]
    if moved:
        warnings.append(f"{len(moved)} shared sample id(s) name a different video in the two runs (e.g. {moved[0]})")
    if problems:
        return cmp
    paired = [s for s in shared if ra[s].correct is not None and rb[s].correct is not None]
    cmp.unpaired = [s for s in shared if s not in set(paired)]
    if not paired:
        cmp.problems.append("no shared sample with a verdict in both runs")
        return cmp
    cmp.outcome = paired_outcome([bool(ra[s].correct) for s in paired], [bool(rb[s].correct) for s in paired],
                                 [ra[s].video_key for s in paired], task_seed(seed, task), n_boot)
    cmp.flips = [_flip(task, ra[s], rb[s]) for s in paired if ra[s].correct != rb[s].correct]
    return cmp


def _decide(cmp: TaskComparison, alpha: float, min_delta: float) -> str:
    o = cmp.outcome
    if o is None or o.delta is None or cmp.p_holm is None:
        return "not compared"
    if cmp.p_holm >= alpha:
        return "no significant change"
    if o.delta <= -min_delta:
        return "regression"
    if o.delta >= min_delta:
        return "improvement"
    return "significant, below min-delta"


def compare(baseline: Path, candidate: Path, alpha: float = 0.05, min_delta: float = 0.5, seed: int = 0,
            n_boot: int = N_BOOT) -> RegressReport:
    """Paired comparison of two run directories, task by task (see the module docstring)."""
    if not 0 < alpha < 1:
        raise RegressError(f"--alpha must be in (0, 1), got {alpha}")
    if min_delta < 0:
        raise RegressError(f"--min-delta must be >= 0 (percentage points), got {min_delta}")
    a, b = load_run(baseline), load_run(candidate)
    ta, tb = a.tasks(), b.tasks()
    shared = [t for t in ta if t in tb]
    warnings = []
    if a.path.resolve() == b.path.resolve():
        warnings.append("baseline and candidate are the same run directory")
    ma, mb = a.config.get("model"), b.config.get("model")
    if ma == mb and a.config.get("config_hash") == b.config.get("config_hash"):
        warnings.append("both runs have the same model and configuration hash")
    tasks = [_compare_task(t, a, b, seed, n_boot) for t in shared]
    tested = [t for t in tasks if t.outcome is not None]
    for cmp, p in zip(tested, holm([t.outcome.p_value for t in tested])):
        cmp.p_holm = p
        cmp.status = _decide(cmp, alpha, min_delta)
    return RegressReport(a, b, alpha, min_delta, seed, n_boot, tasks, [t for t in ta if t not in tb],
                         [t for t in tb if t not in ta], warnings)


# --------------------------------------------------------------------------- output


def _md(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _ids(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(_md(i) for i in ids[:limit])
    return shown + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def _p(p: Optional[float]) -> str:
    return "—" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def method_line(r: RegressReport) -> str:
    return (f"Exact McNemar test on discordant pairs, Holm-adjusted across {sum(t.outcome is not None for t in r.tasks)} "
            f"task(s), α = {r.alpha}; a task fails only if Holm p < α and Δ ≤ −{r.min_delta} points. "
            f"95% CI of Δ: paired bootstrap over videos ({r.n_boot} resamples, seed {r.seed}).")


def _task_row(t: TaskComparison) -> str:
    o = t.outcome
    if o is None:
        return f"| {_md(t.task)} | — | — | — | — | — | — | — | — | {_md(t.status)} |"
    ci = "—" if o.ci95 is None else f"[{o.ci95[0]:+.1f}, {o.ci95[1]:+.1f}]"
    status = f"**{t.status.upper()}**" if t.status == "regression" else t.status
    return (f"| {_md(t.task)} | {o.n} | {o.baseline_acc:.1f} | {o.candidate_acc:.1f} | {o.delta:+.1f} | {ci} | "
            f"{o.b} / {o.c} | {_p(o.p_value)} | {_p(t.p_holm)} | {status} |")


def to_markdown(r: RegressReport) -> str:
    """A summary for CI logs (GitHub-flavoured Markdown)."""
    lines = [f"## vamba-eval regress: {r.verdict}", "",
             f"baseline `{_md(r.baseline.run_id)}` — {_md(r.baseline.model)}  ",
             f"candidate `{_md(r.candidate.run_id)}` — {_md(r.candidate.model)}", "", method_line(r), "",
             "| task | paired n | baseline % | candidate % | Δ (pts) | 95% CI | b / c | McNemar p | Holm p | verdict |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    lines += [_task_row(t) for t in r.tasks]
    lines += ["", "b = baseline right, candidate wrong; c = baseline wrong, candidate right."]
    notes = [f"- {_md(w)}" for w in r.warnings]
    notes += [f"- tasks only in the baseline: {_ids(r.tasks_only_baseline)}"] if r.tasks_only_baseline else []
    notes += [f"- tasks only in the candidate: {_ids(r.tasks_only_candidate)}"] if r.tasks_only_candidate else []
    for t in r.tasks:
        notes += [f"- **{_md(t.task)}: not compared** — {_md(p)}" for p in t.problems]
        notes += [f"- {_md(t.task)}: {_md(w)}" for w in t.warnings]
        if t.only_baseline:
            notes.append(f"- {_md(t.task)}: {len(t.only_baseline)} sample id(s) only in the baseline: {_ids(t.only_baseline)}")
        if t.only_candidate:
            notes.append(f"- {_md(t.task)}: {len(t.only_candidate)} sample id(s) only in the candidate: {_ids(t.only_candidate)}")
        if t.unpaired:
            notes.append(f"- {_md(t.task)}: {len(t.unpaired)} shared id(s) without a verdict in one run "
                         f"(failed or excluded), not paired: {_ids(t.unpaired)}")
    if notes:
        lines += ["", "### Preconditions and coverage", *notes]
    return "\n".join(lines) + "\n"


def _flip_view(f: Flip) -> dict[str, Any]:
    return {"sample_id": f.sample_id, "video": f.video_key, "gold": f.gold, "lost": f.lost,
            "base": {"response": f.baseline_response, "extracted": f.baseline_extracted},
            "cand": {"response": f.candidate_response, "extracted": f.candidate_extracted}}


def render_html(r: RegressReport, out: Path) -> Path:
    """A self-contained page: the summary table, the preconditions and every flipped sample (escaped)."""
    from vamba_eval.htmlpage import render_page, write_page

    views = []
    for t in r.tasks:
        lost = [_flip_view(f) for f in t.flips if f.lost]
        gained = [_flip_view(f) for f in t.flips if not f.lost]
        views.append({"t": t, "o": t.outcome, "lost": lost[:FLIPS_SHOWN], "gained": gained[:FLIPS_SHOWN],
                      "n_lost": len(lost), "n_gained": len(gained)})
    html = render_page("regress.html.j2", report=r, tasks=views, method=method_line(r), fmt_p=_p,
                       flips_shown=FLIPS_SHOWN)
    return write_page(out, html)
