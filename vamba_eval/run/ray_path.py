"""The Ray branch of ``api.evaluate``: workers start first (they own the model), then the run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from vamba_eval.run import store
from vamba_eval.run.config import RunConfig
from vamba_eval.run.dispatch import RayOptions, record_worker_stats
from vamba_eval.run.executor import Progress
from vamba_eval.run.plan import TaskPlan, cache_root


def execute_ray(run_dir: Path, cfg: RunConfig, plans: list[TaskPlan], units: list, counts: tuple[int, int],
                judge: Any, start: Callable[[dict[str, Any]], None]) -> None:
    """Run ``units`` on Ray workers; records stream into samples.jsonl as they finish."""
    from vamba_eval.run.ray_executor import RayExecutor, settings_from_config

    total, done = counts
    settings = settings_from_config(cfg, plans, cache_root() / "frames" if cfg.frame_cache else None, judge)
    with RayExecutor(settings, RayOptions.from_config(cfg)) as ex:
        start(ex.model_info)
        progress = Progress(total, done, enabled=cfg.progress)  # after start-up, so the ETA excludes it
        with store.SampleWriter(run_dir / store.SAMPLES) as writer:
            def on_record(rec: Any) -> None:
                writer.append(rec)
                progress.update(rec)

            try:
                ex.run(units, on_record, thumbs=run_dir / "thumbs")
            except KeyboardInterrupt:
                print(f"\n[vamba-eval] interrupted: {progress.done}/{total} samples saved in {run_dir}; "
                      "continue with the same command plus --resume", file=sys.stderr)
                raise
            finally:
                record_worker_stats(run_dir, ex.stats)
