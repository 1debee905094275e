"""The Python API the CLI wraps: ``evaluate`` (run), ``rescore`` (score from disk), ``render``.

    from vamba_eval import evaluate
    record = evaluate(tasks=["lvbench", "videomme"], limit=10, output="runs/x")
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from vamba_eval.models.base import ModelSpec
from vamba_eval.records import ResultsRecord, SampleRecord, TaskResult
from vamba_eval.registry import get_model_factory
from vamba_eval.run import store
from vamba_eval.run.config import NON_RESULT_KEYS, RunConfig, build_config
from vamba_eval.run.environment import environment
from vamba_eval.run.executor import Progress, run_local
from vamba_eval.run.plan import TaskPlan, plan_task, work_units
from vamba_eval.run.process import score_fields
from vamba_eval.types import ScoredSample, Sample, VideoRef


def _output_dir(cfg: RunConfig) -> Path:
    if cfg.output:
        return Path(cfg.output).expanduser()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.model}-{cfg.config_hash()[:8]}"


def _check_resume(run_dir: Path, cfg: RunConfig) -> None:
    has_samples = (run_dir / store.SAMPLES).exists() and (run_dir / store.SAMPLES).stat().st_size > 0
    if not cfg.resume:
        if has_samples:
            raise store.RunDirError(f"{run_dir} already holds samples; pass --resume to continue it, "
                                    "or choose another --output")
        return
    if not (run_dir / store.CONFIG).exists():
        return  # nothing to resume: a fresh run
    old = store.read_config(run_dir)
    if old.get("config_hash") != cfg.config_hash():
        prev, now = old.get("config", {}), recorded_config(cfg)
        diff = sorted(k for k in set(prev) | set(now) if prev.get(k) != now.get(k) and k not in NON_RESULT_KEYS)
        raise store.RunDirError(f"{run_dir}: --resume with a different configuration (changed: {', '.join(diff)}); "
                                "use the original settings or a new --output")


def _banner(plans: list[TaskPlan], model_info: dict[str, Any]) -> None:
    for p in plans:
        if p.synthetic:
            print(f"[vamba-eval] !!! {p.task.name}: {p.data['notice']} (data: {p.folder}). "
                  "Pass --data-dir to evaluate the real release.", file=sys.stderr)
    if model_info.get("untrained"):
        print(f"[vamba-eval] !!! model {model_info['path']}: untrained (seeded random weights) — "
              "scores are chance level by construction.", file=sys.stderr)
    elif model_info.get("bundled"):
        print(f"[vamba-eval] model {model_info['name']}: the bundled tiny checkpoint, trained on the synthetic "
              "video world only (pass --model-path for your own).", file=sys.stderr)


def recorded_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as config.json records it: credentials in the judge URL (user info, query values) masked."""
    data = cfg.model_dump(mode="json")
    if data.get("judge_base_url"):
        data["judge_base_url"] = mask_url_credentials(data["judge_base_url"])
    return data


def mask_url_credentials(url: str) -> str:
    """``http://user:KEY@host/v1?api-key=KEY`` → ``http://user:***@host/v1?api-key=***``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"***@{host}"
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _write_config(run_dir: Path, cfg: RunConfig, plans: list[TaskPlan], model_info: dict[str, Any]) -> None:
    old = store.read_config(run_dir) if (run_dir / store.CONFIG).exists() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    starts = old.get("started", []) + [now]
    data = {"run_id": run_dir.name, "config": recorded_config(cfg), "config_hash": cfg.config_hash(),
            "environment": {**environment(cfg.device), "ssm_backend": model_info.get("ssm_backend"),
                            "datasets": {p.task.name: p.data for p in plans}},
            "frames": {p.task.name: p.spec.key() for p in plans},
            "model": model_info, "started": starts}
    store.write_json(run_dir / store.CONFIG, data)


def evaluate(config: Optional[RunConfig] = None, *, config_file: Optional[Path] = None,
             report: bool = True, **overrides: Any) -> ResultsRecord:
    """Run (or resume) an evaluation; returns the results record also written to results.json."""
    cfg = config or build_config(config_file, overrides)
    run_dir = _output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir, cfg)
    store.repair_tail(run_dir / store.SAMPLES)
    plans = [plan_task(name, cfg) for name in cfg.tasks]
    done = set(store.load_records(run_dir / store.SAMPLES))
    units = work_units(plans, done)
    total = sum(len(p.samples) for p in plans)
    judge, judge_info = _judge_for(cfg, plans)
    if units and _executor(cfg) == "ray":
        from vamba_eval.run.ray_path import execute_ray

        execute_ray(run_dir, cfg, plans, units, (total, total - len(units)), judge,
                    lambda info: _start(run_dir, cfg, plans, info, judge_info))
    else:
        model = get_model_factory(cfg.model)(ModelSpec(cfg.model, cfg.model_path, cfg.device, cfg.dtype,
                                                       cfg.ssm_backend, cfg.seed, cfg.chunk_frames,
                                                       cfg.compile)) if units else None
        _start(run_dir, cfg, plans, model.describe() if model else store.read_config(run_dir).get("model", {}),
               judge_info)
        if units:
            _execute(run_dir, cfg, plans, units, model, total, total - len(units), judge)
        if judge is not None:  # Ray actors score with their own judge copies: usage not collected there
            from vamba_eval.judge import record_judge_usage

            record_judge_usage(run_dir, judge)
    results = compute_results(run_dir, plans, cfg)
    if report:
        render(run_dir)
    print(f"[vamba-eval] results: {run_dir / store.RESULTS}" + (f"\n[vamba-eval] report:  {run_dir / store.REPORT}"
                                                                  if report else ""), file=sys.stderr)
    return results


def _executor(cfg: RunConfig) -> str:
    import importlib.util

    from vamba_eval.run.dispatch import choose_executor

    return choose_executor(cfg.executor, gpus=cfg.gpus, address=cfg.ray_address,
                           ray_available=importlib.util.find_spec("ray") is not None)


def _start(run_dir: Path, cfg: RunConfig, plans: list[TaskPlan], info: dict[str, Any],
           judge_info: dict[str, Any]) -> None:
    """Banners + config.json, once the model (or the first Ray worker) has described itself."""
    _banner(plans, info)
    _write_config(run_dir, cfg, plans, {**info, **({"judge": judge_info} if judge_info else {})})


def _judge_for(cfg: RunConfig, plans: list[TaskPlan]) -> tuple[Any, dict[str, Any]]:
    """The LLM judge for judge-scored tasks (checked before any inference), and what to record."""
    judged = [p.task for p in plans if p.task.judge_score is not None]
    if not judged:
        return None, {}
    from vamba_eval.judge import build_judge

    judge = build_judge(cfg)
    if judge is None:  # fail before any model work, not halfway through
        from vamba_eval.run.config import ConfigFileError

        raise ConfigFileError(f"{', '.join(t.name for t in judged)}: scored by an LLM judge and none is configured. "
                              "Pass --judge-model (and --judge-base-url for an OpenAI-compatible server; the key "
                              "is read from $OPENAI_API_KEY or --judge-api-key-env), or leave these tasks out.")
    info = {"configured": True, **judge.describe()}
    for task in judged:
        check = task.extra.get("check_judge")
        if check is not None:
            info[task.name] = check(judge)
    return judge, info


def _execute(run_dir: Path, cfg: RunConfig, plans: list[TaskPlan], units: list, model: Any, total: int,
             done: int, judge: Any = None) -> None:
    from vamba_eval.video import FrameCache
    from vamba_eval.run.plan import cache_root

    progress = Progress(total, done, enabled=cfg.progress)
    cache = FrameCache(cache_root() / "frames") if cfg.frame_cache else None
    t0 = time.perf_counter()
    with store.SampleWriter(run_dir / store.SAMPLES) as writer:
        def on_record(rec: SampleRecord) -> None:
            writer.append(rec)
            progress.update(rec)

        try:
            run_local(units, {p.task.name: p.task for p in plans}, model, on_record,
                      use_subtitles=cfg.subtitles, scoring=cfg.scoring,
                      max_new_tokens={p.task.name: p.max_new_tokens for p in plans},
                      workers=cfg.workers, cache=cache, thumbs=run_dir / "thumbs", judge=judge)
        except KeyboardInterrupt:
            print(f"\n[vamba-eval] interrupted: {progress.done}/{total} samples saved in {run_dir}; "
                  "continue with the same command plus --resume", file=sys.stderr)
            raise
    print(f"[vamba-eval] {len(units)} samples in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def sample_from_record(rec: SampleRecord) -> Sample:
    """Enough of the Sample to re-run the official scorer from disk."""
    return Sample(task=rec.task, sample_id=rec.sample_id, video=VideoRef(rec.video), question="",
                  options=tuple(rec.options), answer=rec.gold,
                  categories={k: tuple(v) for k, v in rec.categories.items()}, meta={"video_id": rec.video_key})


def _scored(rec: SampleRecord) -> ScoredSample:
    return ScoredSample(rec.sample_id, rec.video_key, {k: tuple(v) for k, v in rec.categories.items()},
                        rec.extracted, rec.correct, error=rec.error.type if rec.error else None,
                        unparsed=rec.unparsed, flags=tuple(rec.flags), score=rec.score)


def results_from_records(records: dict, task_names: list[str], n_total: dict[str, int], scoring: str,
                         run_id: str, config_hash: str, synthetic: bool) -> ResultsRecord:
    from vamba_eval.registry import get_task

    tasks: dict[str, TaskResult] = {}
    for name in task_names:
        task = get_task(name)
        scored = [_scored(r) for (t, _), r in sorted(records.items()) if t == name]
        result = TaskResult.model_validate(task.aggregate(scored, scoring))
        tasks[name] = result.model_copy(update={"n": n_total.get(name, len(scored))})
    return ResultsRecord(run_id=run_id, config_hash=config_hash, synthetic=synthetic, tasks=tasks)


def compute_results(run_dir: Path, plans: list[TaskPlan], cfg: RunConfig) -> ResultsRecord:
    records = store.load_records(run_dir / store.SAMPLES)
    wanted = {(p.task.name, s.sample_id) for p in plans for s in p.samples}
    records = {k: v for k, v in records.items() if k in wanted}
    res = results_from_records(records, [p.task.name for p in plans], {p.task.name: len(p.samples) for p in plans},
                               cfg.scoring, run_dir.name, cfg.config_hash(), any(p.synthetic for p in plans))
    store.write_json(run_dir / store.RESULTS, res.model_dump(mode="json"))
    return res


def rescore(run_dir: Path, scoring: Optional[str] = None) -> ResultsRecord:
    """Re-apply the official (or lmms-eval) rules to the saved responses; no model, no videos."""
    from vamba_eval.registry import get_task

    run_dir = Path(run_dir)
    conf = store.read_config(run_dir)
    cfg = RunConfig.model_validate(conf["config"])
    mode = scoring or cfg.scoring
    records = store.load_records(run_dir / store.SAMPLES)
    rescored = {}
    for key, rec in records.items():
        task = get_task(rec.task)
        if rec.error is None and rec.response is not None and task.judge_score is None:
            fields = score_fields(task, sample_from_record(rec), rec.response, mode)
            rec = rec.model_copy(update=fields)  # judge-scored records keep their stored judge verdicts
        rescored[key] = rec
    n_total = {name: ds["n_samples"] for name, ds in conf["environment"]["datasets"].items()}
    synthetic = any(ds.get("synthetic") for ds in conf["environment"]["datasets"].values())
    res = results_from_records(rescored, cfg.tasks, n_total, mode, run_dir.name, conf["config_hash"], synthetic)
    store.write_json(run_dir / store.RESULTS, res.model_dump(mode="json"))
    return res


def render(run_dir: Path) -> Path:
    from vamba_eval.report import render_run_report

    return render_run_report(Path(run_dir))
