"""The numbers of ``ablation.html``, read only from the ablation directory (pure given the files).

Per task and cell:

* per-seed value: the run's official overall metric (``results.json``);
* seeds as mean ± sd (sd with ddof = 1; none for one seed);
* pooled: the task's own aggregation over the questions of every seed together, its 95 % CI
  clustered by VIDEO across seeds (the seeds answer the same questions, so they are not independent
  draws of the question set; ``vamba_eval.stats``);
* Δ to the reference cell: paired on the same questions — per seed, the questions both runs scored
  (a single-run checkpoint cell pairs with every seed of the other side), pooled over seeds; exact
  McNemar p on the discordant pairs, video-bootstrap 95 % CI of Δ (``vamba_eval.paired_stats``),
  Holm-adjusted over the cells of one task.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vamba_eval.ablate.spec import AblationSpec, Cell, axis_value, cell_recipe, read_paper_csv, resolve
from vamba_eval.ablate.state import STATE, read_events
from vamba_eval.paired_stats import PairedOutcome, holm, paired_outcome, task_seed
from vamba_eval.records import Estimate, ResultsRecord, SampleRecord
from vamba_eval.types import ScoredSample

TABLE_TITLES = {"ablation_t2": "Table 2 — cross-attention init × Mamba vs Mamba-2",
                "ablation_t3": "Table 3 — distillation weight λ (stage 1)"}


@dataclass
class UnitResult:
    cell: str
    seed: int
    run_dir: Path
    state: dict[str, Any]
    records: dict[tuple[str, str], SampleRecord]
    results: ResultsRecord


@dataclass
class Row:
    cell: Cell
    axes: dict[str, Any]
    status: str
    seeds: dict[int, Optional[float]] = field(default_factory=dict)
    mean: Optional[float] = None
    sd: Optional[float] = None
    pooled: Optional[Estimate] = None
    metric: str = "accuracy"
    delta: Optional[PairedOutcome] = None
    p_holm: Optional[float] = None
    paper: list[dict[str, Any]] = field(default_factory=list)
    run_dirs: dict[int, Path] = field(default_factory=dict)


def load_units(spec: AblationSpec, out: Path) -> tuple[dict[str, dict[int, UnitResult]], dict[str, dict[int, str]]]:
    """Finished evaluations (cell → seed → result) and the status of every planned unit."""
    from vamba_eval.run import store

    done: dict[str, dict[int, UnitResult]] = {}
    status: dict[str, dict[int, str]] = {}
    failed = {e.get("unit"): e.get("error", "") for e in read_events(out) if e.get("event") == "failed"}
    for cell in spec.cells:
        for seed in spec.seeds_of(cell):
            unit = Path(out) / "cells" / cell.name / f"seed{seed}"
            state = json.loads((unit / STATE).read_text(encoding="utf-8")) if (unit / STATE).is_file() else {}
            run_dir = unit / "run"
            name = f"cell {cell.name} seed{seed}"
            if "eval" in state.get("steps", {}) and (run_dir / store.RESULTS).is_file():
                res = ResultsRecord.model_validate_json((run_dir / store.RESULTS).read_text(encoding="utf-8"))
                done.setdefault(cell.name, {})[seed] = UnitResult(cell.name, seed, run_dir, state,
                                                                   store.load_records(run_dir / store.SAMPLES), res)
                status.setdefault(cell.name, {})[seed] = "evaluated"
            elif name in failed:
                status.setdefault(cell.name, {})[seed] = f"failed: {failed[name]}"
            else:
                steps = ", ".join(state.get("steps", {})) or "nothing"
                status.setdefault(cell.name, {})[seed] = f"not finished (done: {steps})"
    return done, status


def _scored(rec: SampleRecord, prefix: str) -> ScoredSample:
    return ScoredSample(f"{prefix}{rec.sample_id}", rec.video_key, {k: tuple(v) for k, v in rec.categories.items()},
                        rec.extracted, rec.correct, error=rec.error.type if rec.error else None,
                        unparsed=rec.unparsed, flags=tuple(rec.flags), score=rec.score)


def pooled_estimate(task: str, runs: list[UnitResult], scoring: str) -> tuple[Optional[Estimate], str]:
    """The task's official aggregation over every seed's questions together (ids prefixed by seed)."""
    from vamba_eval.records import TaskResult
    from vamba_eval.registry import get_task

    scored = [_scored(r, f"s{u.seed}:") for u in runs for (t, _), r in sorted(u.records.items()) if t == task]
    if not scored:
        return None, "accuracy"
    result = TaskResult.model_validate(get_task(task).aggregate(scored, scoring))
    return result.overall, result.metric


def _pairs(task: str, base: list[UnitResult], cand: list[UnitResult]) -> tuple[list[bool], list[bool], list[str]]:
    by_seed = {u.seed: u for u in base}
    matches = []
    for u in cand:
        if len(base) == 1 or len(cand) == 1:
            matches += [(b, u) for b in base]
        elif u.seed in by_seed:
            matches.append((by_seed[u.seed], u))
    x, y, clusters = [], [], []
    for b, c in matches:
        for key, rb in b.records.items():
            rc = c.records.get(key)
            if key[0] != task or rc is None or rb.correct is None or rc.correct is None:
                continue
            x.append(bool(rb.correct))
            y.append(bool(rc.correct))
            clusters.append(rb.video_key)
    return x, y, clusters


def _mean_sd(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paper_rows(spec: AblationSpec, base: Path) -> list[dict[str, Any]]:
    if spec.paper_results is None:
        return []
    path = resolve(base, spec.paper_results)
    return read_paper_csv(path) if path.is_file() else []


def axes_of(spec: AblationSpec, cell: Cell) -> dict[str, Any]:
    recipe = cell_recipe(spec, cell, spec.seeds_of(cell)[0]) if cell.kind == "recipe" else None
    return {a: axis_value(cell, a, recipe) for a in spec.axes}


def task_rows(spec: AblationSpec, base: Path, task: str, done: dict[str, dict[int, UnitResult]],
              status: dict[str, dict[int, str]]) -> list[Row]:
    scoring = spec.eval.get("scoring", "official")
    csv_rows = paper_rows(spec, base)
    ref = list(done.get(spec.reference, {}).values())
    rows = []
    for cell in spec.cells:
        runs = [done[cell.name][s] for s in sorted(done.get(cell.name, {}))]
        statuses = status.get(cell.name, {})
        finished = sum(1 for s in statuses.values() if s == "evaluated")
        row = Row(cell, axes_of(spec, cell), status=f"{finished}/{len(statuses)} evaluated")
        for u in runs:
            res = u.results.tasks.get(task)
            row.seeds[u.seed] = res.overall.value if res else None
            row.run_dirs[u.seed] = u.run_dir
        row.mean, row.sd = _mean_sd([v for v in row.seeds.values() if v is not None])
        row.pooled, row.metric = pooled_estimate(task, runs, scoring) if runs else (None, "accuracy")
        if runs and ref and cell.name != spec.reference and row.metric == "accuracy":
            x, y, clusters = _pairs(task, ref, runs)
            if x:
                row.delta = paired_outcome(x, y, clusters, task_seed(0, f"{task}/{cell.name}"))
        for p in cell.paper:
            for r in csv_rows:
                if r["table"] == p.table and r["model"] == p.row and r["task"] == task:
                    row.paper.append({"table": p.table, "row": p.row, "score": r["score"], "text": r["text"],
                                      "note": r["group_note"]})
        rows.append(row)
    tested = [r for r in rows if r.delta is not None]
    for r, p in zip(tested, holm([r.delta.p_value for r in tested])):
        r.p_holm = p
    return rows


def chance_level(task: str, done: dict[str, dict[int, UnitResult]]) -> Optional[float]:
    """Mean of 1 / (number of options) over the task's questions (percent), from any finished run."""
    for runs in done.values():
        for u in runs.values():
            opts = [len(r.options) for (t, _), r in u.records.items() if t == task and r.options]
            if opts:
                return 100.0 * sum(1 / n for n in opts) / len(opts)
    return None
