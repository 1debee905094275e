"""``vamba-eval export RUN_DIR --format F``: the files each benchmark's own server or script takes.

A registry maps a format name to (task, hook, how to call it). The hook lives with the task:
``TaskDef.extra[hook]`` first, else a module-level function of ``vamba_eval.tasks.<task>`` — the
rules of a benchmark's submission format stay in its task module; this module only feeds them the
run's data. Contract for a new format: ``submission(records) -> JSON-able``, where ``records`` is
the run's list of ``SampleRecord`` for that task (one per sample id, failed samples included: they
carry ``error`` and no response), in release order; or ``leaderboard_json(result)`` taking the
task's results.json entry as a dict.

    format               writes                               hook (tasks/<module>.py)
    lvbench              {uid: letter}                        lvbench.submission(pairs)
    lvbench-leaderboard  {KIR: …, Overall: …} fractions       lvbench.leaderboard_json(result)
    videomme             official results JSON (valid JSON)   videomme.results_file(samples, responses)
    mlvu-test            [{question_id, question_type, option}]  mlvu.submission(records)
    longvideobench-test  {id: raw prediction}                 longvideobench_test.submission(records)
    mvbench              upload_leaderboard.json {task: acc, Avg}  mvbench.leaderboard_json(result)
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from vamba_eval.records import SampleRecord
from vamba_eval.regress import natural_key
from vamba_eval.run import store
from vamba_eval.types import Sample


class ExportError(ValueError):
    """The run cannot be exported in that format; the message says why and what to do."""


@dataclass
class ExportInput:
    """What a format's hook may need, computed on demand."""

    run_dir: Path
    task: str
    config: dict[str, Any]
    records: list[SampleRecord]
    release: Optional[list[Sample]] = None  # the release's samples (run ids only), when its folder is readable
    warnings: list[str] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        """(sample id, raw response) of every sample that got a response (failed ones are left out)."""
        return [(r.sample_id, r.response or "") for r in self.records if r.error is None and r.response is not None]

    def responses(self) -> dict[str, str]:
        return dict(self.pairs())

    def result(self) -> dict[str, Any]:
        """The task's entry of results.json (recomputed from samples.jsonl when results.json lacks it)."""
        from vamba_eval.run.api import results_from_records

        res = store.read_results(self.run_dir)
        if res is not None and self.task in res.tasks:
            return res.tasks[self.task].model_dump(mode="json")
        self.warnings.append(f"results.json has no {self.task} result; recomputed from samples.jsonl")
        dataset = ((self.config.get("environment") or {}).get("datasets") or {}).get(self.task) or {}
        scoring = (self.config.get("config") or {}).get("scoring", "official")
        again = results_from_records({(self.task, r.sample_id): r for r in self.records}, [self.task],
                                     {self.task: dataset.get("n_samples", len(self.records))}, scoring,
                                     self.run_dir.name, str(self.config.get("config_hash", "")),
                                     bool(dataset.get("synthetic")))
        return again.tasks[self.task].model_dump(mode="json")

    def samples(self) -> list[Sample]:
        """Full samples from the release when readable; else rebuilt from the records (no question text/url)."""
        if self.release is not None:
            return self.release
        from vamba_eval.run.api import sample_from_record

        self.warnings.append("release folder not readable here: question text and url are left empty in the "
                             "export (the official scorers do not read them)")
        return [sample_from_record(r) for r in self.records]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    task: str
    hook: str
    signature: str  # what the hook takes, for the error message
    call: Callable[[Callable[..., Any], ExportInput], Any]
    filename: str
    description: str
    test_split: bool = False  # the format is for an unlabelled test split


FORMATS: dict[str, ExportFormat] = {}


def register(fmt: ExportFormat) -> None:
    FORMATS[fmt.name] = fmt


def _with_records(fn: Callable[..., Any], inp: ExportInput) -> Any:
    return fn(inp.records)


def _with_result(fn: Callable[..., Any], inp: ExportInput) -> Any:
    return fn(inp.result())


for _fmt in (
    ExportFormat("lvbench", "lvbench", "submission", "responses: Iterable[(uid, raw response)]",
                 lambda fn, inp: fn(inp.pairs()), "lvbench_submission.json",
                 "LVBench {uid: letter} (input of the official compute_accuracy.py)"),
    ExportFormat("lvbench-leaderboard", "lvbench", "leaderboard_json", "result: dict", _with_result,
                 "lvbench_result.json", "LVBench leaderboard result.json (type codes + Overall, fractions)"),
    ExportFormat("videomme", "videomme", "results_file", "samples, responses: dict[id, raw response]",
                 lambda fn, inp: fn(inp.samples(), inp.responses()), "videomme_results.json",
                 "Video-MME results file in the official template's shape (valid JSON)"),
    ExportFormat("mlvu-test", "mlvu", "submission", "records: list[SampleRecord]", _with_records,
                 "mlvu_test_submission.json", "MLVU test [{question_id, question_type, option}]", test_split=True),
    ExportFormat("longvideobench-test", "longvideobench_test", "submission", "records: list[SampleRecord]",
                 _with_records, "longvideobench_test_submission.json", "LongVideoBench test {id: prediction}",
                 test_split=True),
    ExportFormat("mvbench", "mvbench", "leaderboard_json", "result: dict", _with_result,
                 "mvbench_upload_leaderboard.json", "MVBench leaderboard JSON {task: accuracy %, Avg}"),
):
    register(_fmt)


def find_hook(fmt: ExportFormat) -> Callable[..., Any]:
    """The task module's function for ``fmt``; a clear error when the module or function is not there yet."""
    from vamba_eval.registry import get_task, task_names

    want = (f"export format {fmt.name!r} needs tasks/{fmt.task}.py to provide `{fmt.hook}({fmt.signature})` "
            f"(as TaskDef.extra[{fmt.hook!r}] or a module-level function)")
    if fmt.task not in task_names():
        raise ExportError(f"{want}; task {fmt.task!r} is not installed yet")
    fn = get_task(fmt.task).extra.get(fmt.hook)
    if fn is None:
        fn = getattr(importlib.import_module(f"vamba_eval.tasks.{fmt.task}"), fmt.hook, None)
    if not callable(fn):
        raise ExportError(f"{want}; vamba_eval.tasks.{fmt.task} does not provide it yet")
    return fn


def _release(task: str, dataset: dict[str, Any], ids: set[str], warnings: list[str]) -> Optional[list[Sample]]:
    from vamba_eval.registry import get_task
    from vamba_eval.task_api import DataError

    path = dataset.get("path")
    if not path or not Path(path).exists():
        return None
    try:
        samples = get_task(task).load(Path(path))
    except DataError as err:
        warnings.append(f"could not re-read the release at {path} ({err})")
        return None
    found = [s for s in samples if s.sample_id in ids]
    if len(found) != len(ids):
        warnings.append(f"{len(ids) - len(found)} sample id(s) of the run are not in the release at {path}; "
                        "using the run's own records")
        return None
    return found


def export_input(run_dir: Path, fmt: ExportFormat) -> ExportInput:
    run_dir = Path(run_dir)
    config = store.read_config(run_dir)
    records = [r for (t, _), r in store.load_records(run_dir / store.SAMPLES).items() if t == fmt.task]
    if not records:
        raise ExportError(f"{run_dir}: no {fmt.task} samples in {store.SAMPLES}; export format {fmt.name!r} "
                          f"needs a run of task {fmt.task}")
    dataset = ((config.get("environment") or {}).get("datasets") or {}).get(fmt.task) or {}
    warnings = _warnings(fmt, dataset, records)
    release = _release(fmt.task, dataset, {r.sample_id for r in records}, warnings)
    if release is not None:
        order = {s.sample_id: i for i, s in enumerate(release)}
        records.sort(key=lambda r: order[r.sample_id])
    else:
        records.sort(key=lambda r: natural_key(r.sample_id))
    return ExportInput(run_dir, fmt.task, config, records, release, warnings)


def _warnings(fmt: ExportFormat, dataset: dict[str, Any], records: list[SampleRecord]) -> list[str]:
    out = []
    if dataset.get("synthetic"):
        out.append(f"{fmt.task}: this run used synthetic demo data — the export is not a real submission")
    if dataset.get("limit") is not None:
        out.append(f"{fmt.task}: the run was limited to {dataset['limit']} samples (--limit); the export is partial")
    n = dataset.get("n_samples")
    if isinstance(n, int) and len(records) < n:
        out.append(f"{fmt.task}: {n - len(records)} of {n} samples have no record (unfinished run? --resume it)")
    failed = sum(r.error is not None for r in records)
    if failed:
        out.append(f"{fmt.task}: {failed} failed sample(s) have no response in the export")
    if fmt.test_split:
        splits = {s for r in records for s in r.categories.get("split", [])}
        if (splits and splits != {"test"}) or (not splits and any(r.gold for r in records)):
            out.append(f"{fmt.task}: the samples look like a labelled dev/val split (split {sorted(splits) or '?'}) — "
                       f"format {fmt.name!r} is meant for the test split")
    return out


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    n_items: int
    warnings: list[str]


def export(run_dir: Path, fmt: str, out: Optional[Path] = None) -> ExportResult:
    """Write RUN_DIR's submission file for ``fmt`` (default RUN_DIR/submissions/<filename>)."""
    if fmt not in FORMATS:
        from vamba_eval.registry import did_you_mean

        raise ExportError(str(did_you_mean("export format", fmt, FORMATS)))
    spec = FORMATS[fmt]
    hook = find_hook(spec)
    inp = export_input(Path(run_dir), spec)
    data = spec.call(hook, inp)
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ExportError(f"tasks/{spec.task}.py `{spec.hook}` returned data that is not valid JSON ({err})") from None
    path = Path(out) if out is not None else Path(run_dir) / "submissions" / spec.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_text(path, text)
    n_items = len(data) if isinstance(data, (list, dict)) else 1
    return ExportResult(path, fmt, n_items, list(inp.warnings))


def print_warnings(result: ExportResult) -> None:
    for w in result.warnings:
        print(f"[vamba-eval] warning: {w}", file=sys.stderr)
