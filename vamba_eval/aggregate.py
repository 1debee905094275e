"""Pure aggregation of scored samples into a task result (``records.TaskResult`` as JSON).

Rules shared by the multiple-choice benchmarks:

* The denominator is every sample whose ``correct`` is not None. Samples with an error, and
  samples the official rule excludes (Video-MME's empty extractions), carry ``correct=None``.
* Overall = micro accuracy (Σ correct / Σ scored), the rule of both LVBench's
  ``compute_accuracy.py`` and Video-MME's ``eval_your_results.py``.
* A breakdown axis lists, for each label, the samples whose ``categories[axis]`` contains that
  label: a multi-label sample counts toward EVERY one of its labels (LVBench's
  ``for category in qa['question_type']`` loop). Labels are sorted for stable output; a label
  whose samples all failed still appears, with ``value=None``.
* Standard errors are clustered by ``video_key`` (see ``vamba_eval.stats``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from vamba_eval.records import Estimate, TaskResult
from vamba_eval.stats import accuracy_estimate
from vamba_eval.types import ScoredSample


def estimate_of(samples: Sequence[ScoredSample]) -> Estimate:
    """Accuracy estimate over the samples that are in the denominator."""
    counted = [s for s in samples if s.correct is not None]
    return accuracy_estimate([bool(s.correct) for s in counted], [s.video_key for s in counted])


def breakdown(scored: Sequence[ScoredSample], axis: str) -> dict[str, Estimate]:
    """label → estimate over the samples carrying that label on ``axis``."""
    labels = sorted({label for s in scored for label in s.categories.get(axis, ())})
    return {label: estimate_of([s for s in scored if label in s.categories.get(axis, ())]) for label in labels}


def aggregate_accuracy(
    scored: Sequence[ScoredSample],
    *,
    task: str,
    title: str,
    scoring: str,
    breakdowns: Sequence[str],
    n_total: int,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Overall + per-axis accuracies and the failure/unparsed/flag counts, as a JSON dict."""
    flags = Counter(flag for s in scored for flag in s.flags)
    result = TaskResult(
        task=task,
        title=title,
        metric="accuracy",
        scoring=scoring,
        overall=estimate_of(scored),
        breakdowns={axis: breakdown(scored, axis) for axis in breakdowns},
        n=n_total,
        n_scored=sum(1 for s in scored if s.correct is not None),
        n_failed=sum(1 for s in scored if s.error is not None),
        n_unparsed=sum(1 for s in scored if s.unparsed),
        n_flagged={name: flags[name] for name in sorted(flags)},
        notes=list(notes),
    )
    return result.model_dump(mode="json")
