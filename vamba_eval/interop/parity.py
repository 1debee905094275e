"""The scoring-parity page: official vs lmms-eval scoring on the SAME saved responses.

    vamba-eval parity RUN_DIR [--out FILE]     # default RUN_DIR/parity.html

For every scored task of a run (native or imported), each saved response is scored twice by
vamba-eval — official rules and the lmms-eval compatibility mode — and, for runs imported with
``vamba-eval import lmms-eval``, compared with what lmms-eval itself logged (``lmms_eval_samples.jsonl``).
Per task: the three aggregates (and lmms-eval's reported number), the count of differing samples by
reason, the known divergences of shared/specs/benchmarks.md, and the differing samples with both
verdicts and the response. Judge-scored tasks have no lmms-eval counterpart and are listed as such.
No model, no videos: only the run's files.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vamba_eval.interop.lmms_output import SIDECAR
from vamba_eval.interop.parity_reasons import KNOWN, Verdict, explain, explain_logged, from_fields, logged_verdict
from vamba_eval.records import SampleRecord
from vamba_eval.run import store

PAGE = "parity.html"
TEMPLATE = "parity.html.j2"
SHOWN = 300  # differing samples listed per task and kind


class ParityError(ValueError):
    """The run cannot be compared (not a run directory …); the message says what to pass."""


@dataclass
class SampleDiff:
    sample_id: str
    gold: str
    response: str
    official: Verdict
    lmms: Verdict
    reason: str
    logged: Optional[Verdict] = None


@dataclass
class TaskParity:
    task: str
    title: str
    n_compared: int = 0
    values: dict[str, Optional[float]] = field(default_factory=dict)  # official / lmms-eval / logged
    denominators: dict[str, int] = field(default_factory=dict)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # lmms-eval task → its own numbers
    diffs: list[SampleDiff] = field(default_factory=list)  # official vs lmms-eval
    logged_diffs: list[SampleDiff] = field(default_factory=list)  # our lmms-eval mode vs lmms-eval's log
    reasons: Counter = field(default_factory=Counter)
    known: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    run_dir: Path
    run_id: str
    imported: Optional[dict[str, Any]]
    tasks: list[TaskParity]


def _sidecar(run_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    path = run_dir / SIDECAR
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out.setdefault((rec["task"], rec["sample_id"]), rec)
    return out


def _accuracy(verdicts: list[Optional[bool]]) -> tuple[Optional[float], int]:
    scored = [v for v in verdicts if v is not None]
    return (100.0 * sum(scored) / len(scored) if scored else None), len(scored)


def _aggregate(task: Any, recs: list[SampleRecord], fields: list[dict[str, Any]], mode: str) -> Optional[float]:
    """The task's own aggregation (M-Avg for MLVU …) of the re-scored records."""
    from vamba_eval.types import ScoredSample

    scored = [ScoredSample(r.sample_id, r.video_key, {k: tuple(v) for k, v in r.categories.items()}, f["extracted"],
                           f["correct"], unparsed=f["unparsed"], flags=tuple(f["flags"]), score=f.get("score"))
              for r, f in zip(recs, fields)]
    return task.aggregate(scored, mode)["overall"]["value"]


def compare_task(name: str, records: list[SampleRecord], sidecar: dict[tuple[str, str], dict[str, Any]],
                 version: str) -> TaskParity:
    """Score every saved response both ways (and against lmms-eval's log) for one task."""
    from vamba_eval.registry import get_task
    from vamba_eval.run.api import sample_from_record
    from vamba_eval.run.process import score_fields

    task = get_task(name)
    out = TaskParity(name, task.title, known=list(KNOWN.get(name, [])))
    if task.judge_score is not None:
        out.notes.append("scored by an LLM judge: lmms-eval has no counterpart, nothing to compare")
        return out
    recs = [r for r in records if r.error is None and r.response is not None]
    off_f, lmm_f, logged = [], [], []
    for rec in recs:
        sample = sample_from_record(rec)
        off_f.append(score_fields(task, sample, rec.response, "official"))
        lmm_f.append(score_fields(task, sample, rec.response, "lmms-eval"))
        side = sidecar.get((name, rec.sample_id))
        logged.append(logged_verdict(name, side["verdict"]) if side else None)
    for rec, of, lf, lg in zip(recs, off_f, lmm_f, logged):
        off, lmm = from_fields(of), from_fields(lf)
        if off.correct != lmm.correct:
            reason = explain(name, off, lmm, rec.response or "")
            out.reasons[reason] += 1
            out.diffs.append(SampleDiff(rec.sample_id, rec.gold, rec.response or "", off, lmm, reason, lg))
        if lg is not None and lg.correct != lmm.correct:
            out.logged_diffs.append(SampleDiff(rec.sample_id, rec.gold, rec.response or "", off, lmm,
                                               explain_logged(name, lmm, lg, version), lg))
    out.n_compared = len(recs)
    out.values["official"] = _aggregate(task, recs, off_f, "official")
    out.values["lmms-eval"] = _aggregate(task, recs, lmm_f, "lmms-eval")
    out.denominators = {"official": sum(f["correct"] is not None for f in off_f),
                        "lmms-eval": sum(f["correct"] is not None for f in lmm_f)}
    if any(v is not None for v in logged):
        out.values["lmms-eval (logged)"], out.denominators["lmms-eval (logged)"] = _accuracy(
            [v.correct for v in logged if v is not None])
    n_failed = len(records) - len(recs)
    if n_failed:
        out.notes.append(f"{n_failed} sample(s) without a response (failed) are left out of every column")
    return out


def compute(run_dir: Path) -> ParityReport:
    """Parity of every task in ``run_dir``."""
    run_dir = Path(run_dir)
    try:
        conf = store.read_config(run_dir)
        records = store.load_records(run_dir / store.SAMPLES)
    except store.RunDirError as err:
        raise ParityError(str(err)) from None
    imported = conf.get("imported") if isinstance(conf.get("imported"), dict) else None
    version = (imported or {}).get("lmms_eval_version", "?")
    sidecar = _sidecar(run_dir)
    tasks = list((conf.get("config") or {}).get("tasks") or sorted({t for t, _ in records}))
    out = []
    for name in tasks:
        recs = [r for (t, _), r in sorted(records.items()) if t == name]
        tp = compare_task(name, recs, sidecar, version)
        if imported:
            tp.reported = {lt: imported.get("reported", {}).get(lt, {}) for lt, ours in imported.get("tasks", {}).items()
                           if ours == name}
        out.append(tp)
    return ParityReport(run_dir, str(conf.get("run_id") or run_dir.name), imported, out)


def _view(tp: TaskParity) -> dict[str, Any]:
    return {"t": tp, "diffs": tp.diffs[:SHOWN], "logged_diffs": tp.logged_diffs[:SHOWN],
            "reasons": tp.reasons.most_common()}


def render(run_dir: Path, out: Optional[Path] = None) -> Path:
    """Write the parity page (default RUN_DIR/parity.html); returns its path."""
    return write_report(compute(run_dir), out)


def write_report(report: ParityReport, out: Optional[Path] = None) -> Path:
    """Render a computed parity report to HTML (default RUN_DIR/parity.html)."""
    from datetime import datetime, timezone

    from vamba_eval.htmlpage import render_page, write_page

    out = Path(out) if out is not None else report.run_dir / PAGE
    html = render_page(TEMPLATE, report=report, tasks=[_view(t) for t in report.tasks], shown=SHOWN,
                       generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return write_page(out, html)


def summary_lines(report: ParityReport) -> list[str]:
    """One line per task, for the terminal."""
    lines = []
    for t in report.tasks:
        vals = ", ".join(f"{k} {'n/a' if v is None else format(v, '.1f')}" for k, v in t.values.items())
        lines.append(f"{t.task:<16} {vals or 'not compared'}; {len(t.diffs)} of {t.n_compared} verdicts differ"
                     + (f"; {len(t.logged_diffs)} differ from lmms-eval's own log" if t.logged_diffs else ""))
    return lines


__all__ = ["ParityReport", "TaskParity", "SampleDiff", "ParityError", "compute", "render", "write_report",
           "summary_lines", "PAGE"]
