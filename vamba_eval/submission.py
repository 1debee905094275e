"""Is a run directory a valid leaderboard submission? Every problem is collected, none short-circuits.

Checked, per board column whose task the run evaluated:

* the complete official split: ``limit`` is null, ``datasets[task].n_samples`` equals the column's
  ``n_samples``, the release folder (when present here) still loads to that many samples, every
  sample id has a record (no missing id, no id outside the release), no conflicting duplicate lines,
  at most ``max_failed`` failed samples;
* the official scoring mode (run config, results.json) and the column's ``require_config`` keys;
* recorded versions: the dataset revision (and an accepted one, when the column pins them), the
  vamba-eval version that scored it, the frame spec, and per sample the frame indices, the frame
  size and the extraction rule;
* consistency: each stored verdict equals the official scorer's on the stored response, and
  results.json equals the results recomputed from samples.jsonl;
* real data: synthetic demo runs are rejected unless the board says ``allow_synthetic: true``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from vamba_eval.leaderboard_spec import BoardSpec, Column
from vamba_eval.records import Estimate, ResultsRecord, SampleRecord, TaskResult
from vamba_eval.regress import natural_key
from vamba_eval.run import store

SHOW = 5  # ids quoted per problem


@dataclass
class RunCheck:
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    results: Optional[ResultsRecord] = None
    records: dict[tuple[str, str], SampleRecord] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)  # the board columns this run fills
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:SHOW]) + (f", … ({len(ids) - SHOW} more)" if len(ids) > SHOW else "")


def _read_files(chk: RunCheck) -> bool:
    try:
        chk.config = store.read_config(chk.run_dir)
    except (store.RunDirError, ValueError) as err:
        chk.problems.append(str(err))
        return False
    try:
        chk.results = store.read_results(chk.run_dir)
        if chk.results is None:
            chk.problems.append(f"{chk.run_dir / store.RESULTS}: missing; run `vamba-eval score {chk.run_dir}`")
    except (ValidationError, ValueError) as err:
        chk.problems.append(f"{chk.run_dir / store.RESULTS}: not a valid results record ({str(err).splitlines()[0]})")
    if not (chk.run_dir / store.SAMPLES).is_file():
        chk.problems.append(f"{chk.run_dir / store.SAMPLES}: missing; a submission needs its per-sample records")
        return False
    try:
        chk.records = store.load_records(chk.run_dir / store.SAMPLES)
    except store.RunDirError as err:
        chk.problems.append(str(err))
        return False
    return True


def _run_level(chk: RunCheck, spec: BoardSpec) -> None:
    cfg = chk.config.get("config") or {}
    env = chk.config.get("environment") or {}
    datasets = env.get("datasets") or {}
    if cfg.get("scoring") != spec.scoring:
        chk.problems.append(f"scoring mode is {cfg.get('scoring')!r}; board {spec.name} accepts only {spec.scoring!r} "
                            f"(re-score: `vamba-eval score RUN --scoring {spec.scoring}`)")
    synthetic = [t for t, d in sorted(datasets.items()) if isinstance(d, dict) and d.get("synthetic")]
    if (synthetic or (chk.results and chk.results.synthetic)) and not spec.allow_synthetic:
        chk.problems.append(f"synthetic demo data ({', '.join(synthetic) or 'results.json says synthetic'}): board "
                            f"{spec.name} accepts only runs on the real release (run with --data-dir)")
    imported = chk.config.get("imported")
    if isinstance(imported, dict):  # vamba_eval.interop.lmms_import
        chk.problems.append(f"imported from {imported.get('from', 'another harness')} "
                            f"(version {imported.get('lmms_eval_version', '?')}, model {imported.get('model', '?')}): its "
                            "responses come from another harness's prompts and frame sampling, which vamba-eval did not "
                            f"record; board {spec.name} takes runs made by `vamba-eval run` (compare the scoring of "
                            "this run with `vamba-eval parity RUN`)")
    if chk.results and chk.results.config_hash != chk.config.get("config_hash"):
        chk.problems.append(f"results.json config hash {chk.results.config_hash} ≠ config.json's "
                            f"{chk.config.get('config_hash')}: the results come from another configuration")
    if not (env.get("packages") or {}).get("vamba-eval"):
        chk.problems.append("scorer version not recorded (config.json environment.packages['vamba-eval'])")
    if (chk.config.get("model") or {}).get("untrained"):
        chk.notes.append("the model is untrained (random weights)")
    tasks = list(cfg.get("tasks") or [])
    chk.columns = [c for c in spec.columns if c.task and c.task in tasks]
    if not chk.columns:
        wanted = sorted({c.task for c in spec.columns if c.task})
        chk.problems.append(f"the run evaluated none of the board's tasks (run: {', '.join(tasks) or 'none'}; "
                            f"board {spec.name}: {', '.join(wanted)})")
    ignored = sorted(set(tasks) - {c.task for c in spec.columns})
    if ignored:
        chk.notes.append(f"tasks not on board {spec.name}, ignored: {', '.join(ignored)}")


def _duplicates(chk: RunCheck) -> dict[str, tuple[list[str], list[str]]]:
    """task → (ids with conflicting duplicate lines, ids repeated identically)."""
    lines: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for rec in store.iter_records(chk.run_dir / store.SAMPLES):
        verdict = (rec.response, rec.extracted, rec.correct, rec.score, rec.error.type if rec.error else None)
        lines[(rec.task, rec.sample_id)].append(verdict)
    out: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for (task, sid), verdicts in lines.items():
        if len(verdicts) > 1:
            out[task][0 if len(set(verdicts)) > 1 else 1].append(sid)
    return out


def _release_ids(task: str, dataset: dict[str, Any], chk: RunCheck, where: str) -> Optional[list[str]]:
    from vamba_eval.registry import get_task
    from vamba_eval.task_api import DataError

    path = dataset.get("path")
    if not path or not Path(path).exists():
        chk.notes.append(f"{where}: release folder {path} not found here; split size checked from config.json only")
        return None
    try:
        return [s.sample_id for s in get_task(task).load(Path(path))]
    except DataError as err:
        chk.problems.append(f"{where}: the recorded release folder no longer loads ({err})")
        return None


def _coverage(chk: RunCheck, spec: BoardSpec, col: Column, recs: dict[str, SampleRecord],
              dups: tuple[list[str], list[str]]) -> None:
    where = f"{col.task}"
    cfg = chk.config.get("config") or {}
    dataset = ((chk.config.get("environment") or {}).get("datasets") or {}).get(col.task) or {}
    if not dataset:
        chk.problems.append(f"{where}: no dataset record in config.json environment.datasets")
    if cfg.get("limit") is not None or dataset.get("limit") is not None:
        chk.problems.append(f"{where}: --limit {cfg.get('limit', dataset.get('limit'))} was set; the whole official "
                            "split must be evaluated (re-run without --limit)")
    n = dataset.get("n_samples")
    if n != col.n_samples:
        chk.problems.append(f"{where}: evaluated split has {n} samples; the official split ({col.split}) has {col.n_samples}")
    release = _release_ids(col.task, dataset, chk, where) if dataset else None
    if release is not None and len(release) != col.n_samples:
        chk.problems.append(f"{where}: the release folder {dataset.get('path')} loads {len(release)} samples, "
                            f"not the official {col.n_samples}")
    expected = set(release) if release is not None else None
    missing = sorted(expected - set(recs), key=natural_key) if expected is not None else []
    if expected is None and isinstance(n, int) and len(recs) < n:
        chk.problems.append(f"{where}: {n - len(recs)} of {n} samples have no record in samples.jsonl (resume the run)")
    if missing:
        chk.problems.append(f"{where}: {len(missing)} sample id(s) of the release missing from samples.jsonl: "
                            f"{_ids(missing)} (resume the run with --resume)")
    extra = sorted(set(recs) - expected, key=natural_key) if expected is not None else []
    if extra:
        chk.problems.append(f"{where}: {len(extra)} sample id(s) not in the release: {_ids(extra)}")
    if dups[0]:
        chk.problems.append(f"{where}: duplicate sample id(s) with conflicting records: {_ids(sorted(dups[0], key=natural_key))}")
    if dups[1]:
        chk.notes.append(f"{where}: {len(dups[1])} sample id(s) repeated with identical verdicts (at-least-once "
                         "delivery); the first line counts")
    failed = sorted((s for s, r in recs.items() if r.error is not None), key=natural_key)
    if len(failed) > spec.max_failed:
        chk.problems.append(f"{where}: {len(failed)} failed sample(s) (board allows {spec.max_failed}): {_ids(failed)}")


def _recorded(chk: RunCheck, col: Column, recs: dict[str, SampleRecord]) -> None:
    where = col.task
    cfg = chk.config.get("config") or {}
    dataset = ((chk.config.get("environment") or {}).get("datasets") or {}).get(col.task) or {}
    for key, want in col.require_config.items():
        if cfg.get(key) != want:
            chk.problems.append(f"{where}: config {key} is {cfg.get(key)!r}; column {col.display} requires {want!r}")
    revision = dataset.get("revision")
    if not revision:
        chk.problems.append(f"{where}: dataset revision not recorded")
    elif col.dataset_revisions is not None and revision not in col.dataset_revisions:
        chk.problems.append(f"{where}: dataset revision {revision} is not an accepted one "
                            f"({', '.join(col.dataset_revisions)})")
    if not (chk.config.get("frames") or {}).get(col.task):
        chk.problems.append(f"{where}: frame spec not recorded (config.json frames.{col.task})")
    ok = [r for r in recs.values() if r.error is None]
    for what, bad in (("frame indices", [r.sample_id for r in ok if not r.frame_indices]),
                      ("frame size", [r.sample_id for r in ok if not r.frame_size]),
                      ("extraction rule", [r.sample_id for r in ok if not r.extraction_rule and r.score is None])):
        if bad:
            chk.problems.append(f"{where}: {len(bad)} sample(s) without recorded {what}: {_ids(sorted(bad))}")


def _rescored(chk: RunCheck, spec: BoardSpec, col: Column, recs: dict[str, SampleRecord]) -> None:
    from vamba_eval.registry import get_task
    from vamba_eval.run.api import sample_from_record
    from vamba_eval.run.process import score_fields

    task = get_task(col.task)
    if task.judge_score is not None:
        chk.notes.append(f"{col.task}: judge-scored; stored judge verdicts are not re-derived")
        return
    differ = []
    for sid, rec in recs.items():
        if rec.error is not None or rec.response is None:
            continue
        fields = score_fields(task, sample_from_record(rec), rec.response, spec.scoring)
        if (fields.get("correct"), fields.get("extracted")) != (rec.correct, rec.extracted):
            differ.append(f"{sid} (stored {rec.extracted}/{rec.correct}, scorer {fields.get('extracted')}/{fields.get('correct')})")
    if differ:
        chk.problems.append(f"{col.task}: {len(differ)} stored verdict(s) differ from the {spec.scoring} scorer on the "
                            f"stored response: {_ids(differ)}")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: results.json {json.dumps(a)} vs recomputed {json.dumps(b)}"]


def _consistent(chk: RunCheck, spec: BoardSpec, col: Column, recs: dict[str, SampleRecord]) -> None:
    from vamba_eval.run.api import results_from_records

    where = col.task
    stored = chk.results.tasks.get(col.task) if chk.results else None
    if chk.results is not None and stored is None:
        chk.problems.append(f"{where}: no result in results.json")
    if stored is None:
        return
    if stored.scoring != spec.scoring:
        chk.problems.append(f"{where}: results.json was scored in {stored.scoring!r} mode, not {spec.scoring!r}")
    if stored.metric != col.metric:
        chk.problems.append(f"{where}: metric is {stored.metric!r}; column {col.display} wants {col.metric!r}")
    if value_of(stored, col) is None and col.value != "overall":
        chk.problems.append(f"{where}: results.json has no value {col.value!r}")
    dataset = ((chk.config.get("environment") or {}).get("datasets") or {}).get(col.task) or {}
    n_total = dataset.get("n_samples", len(recs))
    again = results_from_records({(col.task, s): r for s, r in recs.items()}, [col.task], {col.task: n_total},
                                 stored.scoring, chk.results.run_id, chk.results.config_hash, chk.results.synthetic)
    diffs = _diff(_round(stored.model_dump(mode="json")), _round(again.tasks[col.task].model_dump(mode="json")))
    diffs.sort(key=lambda d: (not d.startswith("overall.value"), d.startswith("breakdowns.")))  # headline first
    if diffs:
        chk.problems.append(f"{where}: results.json does not match the results recomputed from samples.jsonl "
                            f"({len(diffs)} field(s)): " + "; ".join(diffs[:3]) + (" …" if len(diffs) > 3 else ""))


def value_of(result: TaskResult, col: Column) -> Optional[Estimate]:
    if col.value == "overall":
        return result.overall
    axis, label = col.value.split("/")
    return (result.breakdowns.get(axis) or {}).get(label)


def check_run(run_dir: Path, spec: BoardSpec) -> RunCheck:
    """Every reason ``run_dir`` cannot enter board ``spec`` (``problems``), plus notes."""
    chk = RunCheck(Path(run_dir))
    if not _read_files(chk):
        return chk
    _run_level(chk, spec)
    dups = _duplicates(chk)
    for col in chk.columns:
        recs = {sid: r for (t, sid), r in chk.records.items() if t == col.task}
        _coverage(chk, spec, col, recs, dups[col.task])
        _recorded(chk, col, recs)
        _rescored(chk, spec, col, recs)
        _consistent(chk, spec, col, recs)
    return chk
