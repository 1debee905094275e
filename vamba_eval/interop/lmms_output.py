"""Read an lmms-eval ``--output_path`` folder: the results json and the ``--log_samples`` jsonl files.

Layout written by lmms-eval 0.4–0.7 (``loggers/evaluation_tracker.py``)::

    OUTPUT_PATH/[<model_name_sanitized>/]<date_id>_results.json
    OUTPUT_PATH/[<model_name_sanitized>/]<date_id>_samples_<task>.jsonl   (only with --log_samples)

The results json holds ``results`` (per task ``"<metric>,<filter>": value``), ``configs`` (each
task's resolved YAML), ``config`` (model, model_args, limit, seeds …), ``n-samples`` and
``lmms_eval_version``. One samples line per doc: ``doc_id``, ``target``, ``input`` (the prompt),
``filtered_resps`` (and ``resps`` when they differ), ``token_counts``, ``doc_hash``, the task's
``process_results`` output under its metric name (e.g. ``videomme_perception_score``) and, before
0.7, the ``doc`` itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

RESULTS_SUFFIX = "_results.json"
SIDECAR = "lmms_eval_samples.jsonl"  # written into an imported run: what lmms-eval logged per sample


class LmmsOutputError(ValueError):
    """The folder is not a usable lmms-eval output; the message says what to do."""


@dataclass(frozen=True)
class LmmsOutput:
    """One lmms-eval evaluation: its results json and its per-sample logs."""

    results_path: Path
    results: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]  # lmms-eval task → logged docs, in file order
    samples_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.results.get("config") or {})

    @property
    def model(self) -> str:
        return str(self.config.get("model") or self.results.get("model_source") or "unknown")

    @property
    def model_args(self) -> str:
        args = self.config.get("model_args") or ""
        return args if isinstance(args, str) else json.dumps(args, sort_keys=True)

    @property
    def version(self) -> str:
        return str(self.results.get("lmms_eval_version") or "unknown")

    def task_config(self, task: str) -> dict[str, Any]:
        return dict((self.results.get("configs") or {}).get(task) or {})

    def reported(self, task: str) -> dict[str, Any]:
        """lmms-eval's own numbers for ``task``: ``{metric: value}`` (filter suffix and stderr dropped)."""
        raw = (self.results.get("results") or {}).get(task) or {}
        out = {}
        for key, value in raw.items():
            metric = key.split(",")[0]
            if key == "alias" or "_stderr" in metric or not isinstance(value, (int, float)):
                continue
            out[metric] = value
        return out


def find_results(path: Path) -> Path:
    """The one results json at ``path`` (a file, or a folder searched recursively)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise LmmsOutputError(f"{path}: no such file or folder; give lmms-eval's --output_path folder or one of its "
                              f"*{RESULTS_SUFFIX} files")
    found = sorted(p for p in path.rglob(f"*{RESULTS_SUFFIX}") if p.is_file())
    if not found:
        raise LmmsOutputError(f"{path}: no lmms-eval results file (<date>{RESULTS_SUFFIX}) here; run lmms-eval with "
                              f"--output_path {path} --log_samples")
    if len(found) > 1:
        listing = "\n  ".join(str(p) for p in found)
        raise LmmsOutputError(f"{path}: {len(found)} lmms-eval evaluations found; import one at a time by passing its "
                              f"results file as OUTPUT_PATH:\n  {listing}")
    return found[0]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as err:
            raise LmmsOutputError(f"{path}:{no}: not JSON ({err}); the file is truncated or was edited — re-run "
                                  "lmms-eval with --log_samples") from None
        if not isinstance(rec, dict) or "doc_id" not in rec:
            raise LmmsOutputError(f"{path}:{no}: not an lmms-eval sample log line (no doc_id)")
        out.append(rec)
    return out


def _samples_files(results_path: Path, tasks: list[str]) -> dict[str, Path]:
    name = results_path.name
    prefix = name[: -len(RESULTS_SUFFIX)] if name.endswith(RESULTS_SUFFIX) else ""
    out: dict[str, Path] = {}
    for task in tasks:
        for candidate in (results_path.parent / f"{prefix}_samples_{task}.jsonl",
                          results_path.parent / f"samples_{task}.jsonl"):
            if candidate.is_file():
                out[task] = candidate
                break
    return out


def read_output(path: Path) -> LmmsOutput:
    """Parse an lmms-eval output (folder or results file) with its per-sample logs."""
    results_path = find_results(Path(path))
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LmmsOutputError(f"{results_path}: cannot read the lmms-eval results ({err})") from None
    if not isinstance(results, dict) or "results" not in results:
        raise LmmsOutputError(f"{results_path}: not an lmms-eval results file (no 'results' key)")
    tasks = sorted(set(results.get("results") or {}) | set(results.get("configs") or {}))
    files = _samples_files(results_path, tasks)
    if not files:
        raise LmmsOutputError(f"{results_path}: no per-sample logs (<date>_samples_<task>.jsonl) beside it; the "
                              "responses are needed — re-run lmms-eval with --log_samples")
    samples = {task: _read_jsonl(p) for task, p in files.items()}
    return LmmsOutput(results_path, results, samples, files)


def response_of(log: dict[str, Any]) -> str:
    """The response lmms-eval scored (``filtered_resps``; the first one for repeated generations)."""
    resp: Any = log.get("filtered_resps", log.get("resps"))
    while isinstance(resp, list):
        resp = resp[0] if resp else ""
    return "" if resp is None else str(resp)


def raw_response_of(log: dict[str, Any]) -> Optional[str]:
    """The model's raw output when lmms-eval's filters changed it (``resps`` is logged only then)."""
    if "resps" not in log:
        return None
    resp: Any = log["resps"]
    while isinstance(resp, list):
        resp = resp[0] if resp else ""
    return None if resp is None else str(resp)


__all__ = ["SIDECAR", "LmmsOutput", "LmmsOutputError", "find_results", "read_output", "response_of", "raw_response_of"]
