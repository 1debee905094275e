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
from typing import Any, Mapping, Optional, Sequence

from vamba_eval.records import Estimate, TaskResult
from vamba_eval.stats import accuracy_estimate, mean_estimate
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


# --------------------------------------------------------------------------- graded scores
# Judge-scored tasks (G-VEval, MLVU generation): a sample counts when it has a ``score`` and no
# error; failed samples are left out of the mean and counted in ``n_failed`` (a task whose
# official rule counts failures as 0 must put that 0 in ``score`` itself).


def mean_of(samples: Sequence[ScoredSample], bounds: Optional[tuple[float, float]] = None) -> Estimate:
    """Mean-score estimate over the samples with a score; the interval clipped to ``bounds``."""
    counted = [s for s in samples if s.score is not None and s.error is None]
    est = mean_estimate([float(s.score) for s in counted], [s.video_key for s in counted])
    if bounds is None or est.ci95 is None:
        return est
    return est.model_copy(update={"ci95": [max(bounds[0], est.ci95[0]), min(bounds[1], est.ci95[1])]})


def aggregate_mean(
    scored: Sequence[ScoredSample],
    *,
    task: str,
    title: str,
    scoring: str,
    metric: str,
    n_total: int,
    breakdowns: Sequence[str] = (),
    extra_breakdowns: Optional[Mapping[str, Mapping[str, Estimate]]] = None,
    bounds: Optional[tuple[float, float]] = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Overall + per-axis mean scores (clustered by video) and failure/flag counts, as a JSON dict.

    ``breakdowns`` are category axes of the samples (multi-label samples count toward every label);
    ``extra_breakdowns`` are axes the task computed itself (e.g. G-VEval's ACCR dimensions)."""
    flags = Counter(flag for s in scored for flag in s.flags)
    axes: dict[str, dict[str, Estimate]] = {}
    for axis in breakdowns:
        labels = sorted({label for s in scored for label in s.categories.get(axis, ())})
        axes[axis] = {label: mean_of([s for s in scored if label in s.categories.get(axis, ())], bounds)
                      for label in labels}
    axes.update({axis: dict(rows) for axis, rows in (extra_breakdowns or {}).items()})
    result = TaskResult(
        task=task, title=title, metric=metric, scoring=scoring, overall=mean_of(scored, bounds), breakdowns=axes,
        n=n_total,
        n_scored=sum(1 for s in scored if s.score is not None and s.error is None),
        n_failed=sum(1 for s in scored if s.error is not None),
        n_unparsed=sum(1 for s in scored if s.unparsed),
        n_flagged={name: flags[name] for name in sorted(flags)},
        notes=list(notes),
    )
    return result.model_dump(mode="json")
