"""``vamba-eval import lmms-eval OUTPUT_PATH``: an lmms-eval evaluation as a vamba-eval run directory.

    from vamba_eval.interop.lmms_import import ImportOptions, import_lmms_eval
    result = import_lmms_eval(Path("lmms_out"), ImportOptions(out=Path("runs/imported"),
                                                               data_dir={"videomme": "/data/videomme"}))

Each logged doc becomes one ``samples.jsonl`` record keyed by the OFFICIAL sample id
(``lmms_match``), carrying lmms-eval's prompt and response and the verdict of OUR scorer
(``--scoring official`` by default, or ``lmms-eval``), so ``score``, ``report``, ``regress`` and
``parity`` work on it like on any run. Gold, options and breakdowns come from the release passed with
``--data-dir`` (the same syntax as ``vamba-eval run``); Video-MME can also be imported from the logs
alone. What lmms-eval itself logged per doc (its extraction and verdict) is kept beside the records in
``lmms_eval_samples.jsonl`` for the parity page.

Provenance: ``config.json`` gets ``imported`` (source files, lmms-eval version, model, model_args,
task mapping, lmms-eval's own reported numbers) and ``config.model = "lmms-eval:<model>"``. Frames
were sampled by lmms-eval's model code and are not recorded, so leaderboards refuse imported runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from vamba_eval.interop.lmms_match import LOG_ONLY_TASKS, ReleaseIndex, sample_from_log
from vamba_eval.interop.lmms_output import SIDECAR, LmmsOutput, raw_response_of, read_output, response_of
from vamba_eval.interop.lmms_tasks import METRICS, LmmsTask, resolve
from vamba_eval.records import ResultsRecord, SampleRecord
from vamba_eval.run import store
from vamba_eval.run.config import RunConfig
from vamba_eval.types import Sample

SHOW = 5


class LmmsImportError(ValueError):
    """The import cannot go on; the message says what to pass or fix."""


@dataclass(frozen=True)
class ImportOptions:
    out: Optional[Path] = None  # run directory (default runs/<time>-lmms-eval-<model>)
    task_map: dict[str, str] = field(default_factory=dict)  # lmms-eval task → vamba-eval task
    data_dir: Union[None, str, dict[str, str]] = None  # as `vamba-eval run --data-dir`
    scoring: str = "official"
    skip_unmatched: bool = False  # import the docs that map, report the others (else: error)
    only: tuple[str, ...] = ()  # import only these tasks (lmms-eval or vamba-eval names); () = all


@dataclass
class TaskImport:
    """One vamba-eval task filled from one or more lmms-eval tasks."""

    task: str
    lmms_tasks: list[str]
    records: dict[str, SampleRecord] = field(default_factory=dict)
    sidecar: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # "lmms_task doc N: why"
    duplicates: int = 0
    n_logged: int = 0
    dataset: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportResult:
    run_dir: Path
    results: ResultsRecord
    tasks: dict[str, TaskImport]
    notes: list[str]


def parse_model_args(text: str) -> dict[str, str]:
    """lmms-eval's ``k=v,k=v`` model_args (values kept as strings)."""
    out = {}
    for part in (text or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def group_tasks(output: LmmsOutput, task_map: dict[str, str],
                only: tuple[str, ...] = ()) -> tuple[dict[str, list[LmmsTask]], list[str]]:
    """vamba-eval task → the lmms-eval tasks that fill it; plus notes on lmms-eval tasks left out."""
    from vamba_eval.registry import task_names

    known = set(task_names())
    bad = sorted(v for v in task_map.values() if v not in known)
    if bad:
        raise LmmsImportError(f"--task maps to unknown vamba-eval task(s) {', '.join(bad)}; "
                              f"known: {', '.join(sorted(known))}")
    groups: dict[str, list[LmmsTask]] = {}
    notes = []
    for name in sorted(output.samples):
        info = resolve(name, output.task_config(name), task_map)
        if info is None:
            notes.append(f"lmms-eval task {name} is not a vamba-eval task: left out (map it with --task {name}=TASK)")
            continue
        if only and name not in only and info.ours not in only:
            notes.append(f"lmms-eval task {name} ({info.ours}) not selected with --task: left out")
            continue
        groups.setdefault(info.ours, []).append(info)
    if not groups:
        logged = ", ".join(sorted(output.samples))
        raise LmmsImportError(f"{output.results_path}: none of the logged lmms-eval tasks ({logged}) is a selected "
                              f"vamba-eval task; map them with --task LMMS_TASK=TASK (tasks: {', '.join(sorted(known))})")
    return groups, notes


def _release(task: str, options: ImportOptions) -> Optional[tuple[list[Sample], dict[str, Any]]]:
    """The release samples and the dataset record, when a --data-dir was given for ``task``."""
    from vamba_eval.run.plan import plan_task
    from vamba_eval.synth._release import NOTICE_FILE

    cfg = RunConfig(tasks=[task], data_dir=options.data_dir)
    if cfg.data_dir_for(task) is None:
        return None
    plan = plan_task(task, cfg)
    data = dict(plan.data)
    data["synthetic"] = bool(data.get("synthetic")) or (plan.folder / NOTICE_FILE).exists()
    return list(plan.samples), data


def _verdict_payload(log: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    names = {str(m.get("metric")) for m in config.get("metric_list") or [] if isinstance(m, dict)} | set(METRICS)
    return {k: log[k] for k in sorted(names) if k in log}


def _record(task: str, sample: Sample, log: dict[str, Any], data_root: str, scoring: str) -> SampleRecord:
    from vamba_eval.registry import get_task
    from vamba_eval.run.process import WorkUnit, base_record, score_fields
    from vamba_eval.video import FrameSpec

    prompt = str(log.get("input") or "")
    response = response_of(log)
    counts = (log.get("token_counts") or [None])[0] or {}
    tokens = {k: int(counts[src]) for k, src in (("prompt", "input_tokens"), ("output", "output_tokens"))
              if isinstance(counts.get(src), (int, float))}
    unit = WorkUnit(task, sample, FrameSpec(1), data_root)
    verdict = score_fields(get_task(task), sample, response, scoring)
    return SampleRecord(**base_record(unit), prompt=prompt, prompt_hash=hashlib.sha256(prompt.encode()).hexdigest()[:16],
                        response=response, **verdict, tokens=tokens)


def import_task(task: str, infos: list[LmmsTask], output: LmmsOutput, options: ImportOptions) -> TaskImport:
    """Map every logged doc of ``infos`` to a release sample and score its response."""
    got = TaskImport(task, [i.lmms_name for i in infos])
    release = _release(task, options)
    if release is None and task not in LOG_ONLY_TASKS:
        raise LmmsImportError(f"{task}: pass the release lmms-eval evaluated, --data-dir {task}=FOLDER (or "
                              f"{task}=hf:ORG/NAME@REV for a hub-cache snapshot): gold answers, options and breakdowns "
                              "come from it, and lmms-eval's logs are matched to its official sample ids")
    index = ReleaseIndex(release[0]) if release else None
    data_root = release[1]["path"] if release else ""
    for info in infos:
        config = output.task_config(info.lmms_name)
        for log in output.samples[info.lmms_name]:
            got.n_logged += 1
            sample, why = index.find(info, log) if index else sample_from_log(info, log)
            if sample is None:
                got.unmatched.append(f"{info.lmms_name} doc {log.get('doc_id')}: {why}")
                continue
            if sample.sample_id in got.records:
                got.duplicates += 1
                continue
            got.records[sample.sample_id] = _record(task, sample, log, data_root, options.scoring)
            got.sidecar.append({"task": task, "sample_id": sample.sample_id, "lmms_task": info.lmms_name,
                                "doc_id": log.get("doc_id"), "target": log.get("target"),
                                "verdict": _verdict_payload(log, config), "raw_response": raw_response_of(log)})
    n = got.n_logged - got.duplicates
    got.dataset = ({**release[1], "n_samples": n, "release_n_samples": len(release[0])} if release else
                   {"path": None, "revision": None, "synthetic": False, "n_samples": n, "log_only": True})
    got.dataset["lmms_eval_tasks"] = got.lmms_tasks
    return got


def _int_or_none(value: Any) -> Optional[int]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number >= 1 and number == int(number) else None


def run_config(output: LmmsOutput, groups: dict[str, list[LmmsTask]], options: ImportOptions, run_dir: Path) -> RunConfig:
    """A RunConfig describing the lmms-eval evaluation as closely as our keys allow."""
    args = parse_model_args(output.model_args)
    gens = {json.dumps(output.task_config(i.lmms_name).get("generation_kwargs", {}).get("max_new_tokens"))
            for infos in groups.values() for i in infos}
    max_new = _int_or_none(json.loads(gens.pop())) if len(gens) == 1 else None
    frames = _int_or_none(args.get("max_frames_num") or args.get("frames") or args.get("nframes"))
    return RunConfig(tasks=sorted(groups), model=f"lmms-eval:{output.model}",
                     model_path=args.get("pretrained") or args.get("model_path"), data_dir=options.data_dir,
                     frames=frames, limit=_int_or_none(output.config.get("limit")), output=str(run_dir),
                     seed=_int_or_none(output.config.get("random_seed")) or 0, scoring=options.scoring,
                     subtitles=any(i.subtitles for infos in groups.values() for i in infos), max_new_tokens=max_new,
                     device=str(output.config.get("device") or "cpu"), progress=False)


def provenance(output: LmmsOutput, built: dict[str, TaskImport]) -> dict[str, Any]:
    return {"from": "lmms-eval", "lmms_eval_version": output.version, "source": str(output.results_path.resolve()),
            "samples_files": {t: str(p.resolve()) for t, p in sorted(output.samples_paths.items())},
            "model": output.model, "model_args": output.model_args, "limit": output.config.get("limit"),
            "date": output.results.get("date"), "git_hash": output.results.get("git_hash"),
            "tasks": {i: t for t, b in built.items() for i in b.lmms_tasks},
            "reported": {i: output.reported(i) for b in built.values() for i in b.lmms_tasks},
            "unmatched": {t: b.unmatched for t, b in built.items() if b.unmatched},
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "note": "responses generated by lmms-eval; frames sampled by lmms-eval's model code (not recorded)"}


def _run_dir(options: ImportOptions, output: LmmsOutput) -> Path:
    if options.out is not None:
        run_dir = Path(options.out).expanduser()
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in output.model)
        run_dir = Path("runs") / f"{stamp}-lmms-eval-{safe}"
    if (run_dir / store.SAMPLES).exists() or (run_dir / store.CONFIG).exists():
        raise LmmsImportError(f"{run_dir} already holds a run; choose another --out")
    return run_dir


def _check_unmatched(built: dict[str, TaskImport], skip: bool) -> list[str]:
    notes = []
    for task, b in built.items():
        if not b.unmatched:
            continue
        more = len(b.unmatched) - SHOW
        shown = "; ".join(b.unmatched[:SHOW]) + (f"; … ({more} more)" if more > 0 else "")
        line = f"{task}: {len(b.unmatched)} of {b.n_logged} lmms-eval docs match no release sample ({shown})"
        if not skip:
            raise LmmsImportError(line + ". Pass the release lmms-eval read (--data-dir), fix the task mapping (--task), "
                                  "or import the rest with --skip-unmatched (the missing samples then count as missing)")
        notes.append(line)
    return notes


def import_lmms_eval(source: Path, options: ImportOptions = ImportOptions()) -> ImportResult:
    """Read lmms-eval's output at ``source`` and write a vamba-eval run directory."""
    from vamba_eval.run.api import results_from_records
    from vamba_eval.run.environment import environment

    output = read_output(Path(source))
    groups, notes = group_tasks(output, options.task_map, options.only)
    run_dir = _run_dir(options, output)
    built = {task: import_task(task, infos, output, options) for task, infos in sorted(groups.items())}
    notes += _check_unmatched(built, options.skip_unmatched)
    notes += [f"{t}: {b.duplicates} repeated doc(s) of one sample ignored (the first counts)"
              for t, b in built.items() if b.duplicates]
    notes += [f"{t}: imported from lmms-eval's logs alone (no --data-dir): dataset revision unknown"
              for t, b in built.items() if b.dataset.get("log_only")]
    cfg = run_config(output, groups, options, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = {"run_id": run_dir.name, "config": cfg.model_dump(mode="json"), "config_hash": cfg.config_hash(),
            "environment": {**environment("cpu"), "ssm_backend": None, "datasets": {t: b.dataset for t, b in built.items()}},
            "model": {"name": cfg.model, "path": cfg.model_path, "lmms_eval_model": output.model,
                      "model_args": output.model_args},
            "started": [str(output.results.get("date") or "")], "imported": provenance(output, built)}
    store.write_json(run_dir / store.CONFIG, conf)
    with store.SampleWriter(run_dir / store.SAMPLES, fsync=False) as writer:
        for b in built.values():
            for rec in b.records.values():
                writer.append(rec)
    lines = [json.dumps(s, sort_keys=True, ensure_ascii=False) for b in built.values() for s in b.sidecar]
    store.atomic_write_text(run_dir / SIDECAR, "".join(f"{line}\n" for line in lines))
    records = {(t, sid): r for t, b in built.items() for sid, r in b.records.items()}
    synthetic = any(b.dataset.get("synthetic") for b in built.values())
    results = results_from_records(records, sorted(built), {t: b.dataset["n_samples"] for t, b in built.items()},
                                   cfg.scoring, run_dir.name, cfg.config_hash(), synthetic)
    store.write_json(run_dir / store.RESULTS, results.model_dump(mode="json"))
    return ImportResult(run_dir, results, built, notes)


__all__ = ["ImportOptions", "ImportResult", "LmmsImportError", "TaskImport", "import_lmms_eval", "SIDECAR",
           "parse_model_args"]
